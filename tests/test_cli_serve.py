"""`goodput serve` hands its flags to the worker; other verbs still reject unknown flags."""

from __future__ import annotations

import pytest

from goodput.controllers.cli import main
from goodput.worker_image.__main__ import main as worker_main
from goodput.worker_image.presets import PRESETS


def test_serve_passes_flags_to_the_worker_and_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "random:nope"]) == 2
    assert "random:nope" in capsys.readouterr().err


def test_other_verbs_reject_unknown_flags() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["plan", "-f", "manifests/examples/tiny-cpu.yaml", "--bogus"])
    assert raised.value.code == 2


@pytest.mark.parametrize("entry", ["goodput serve", "python -m goodput.worker_image"])
def test_help_lists_the_workers_options_and_presets(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Both entry points show every worker flag with a readable default and the model presets."""
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--help"]) if entry == "goodput serve" else worker_main(["--help"])
    assert raised.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: {entry}")
    for flag in ("--model", "--port", "--cpu-threads", "--max-num-seqs", "--api-key-file"):
        assert flag in shown
    assert "MISSING" not in shown and "<dataclasses" not in shown
    assert all(preset in shown for preset in PRESETS)
    assert "cgroup" in shown  # how the default thread count is chosen
