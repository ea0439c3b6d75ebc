"""`goodput serve` hands its flags to the worker; other verbs still reject unknown flags."""

from __future__ import annotations

import pytest

from controllers.cli import main


def test_serve_passes_flags_to_the_worker_and_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "random:nope"]) == 2
    assert "random:nope" in capsys.readouterr().err


def test_other_verbs_reject_unknown_flags() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["plan", "-f", "manifests/examples/tiny-cpu.yaml", "--bogus"])
    assert raised.value.code == 2
