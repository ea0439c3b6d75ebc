"""bench/pytest_json.py, the GPU check's test stage: its JSON is rewritten after every test, so a run cut
off by the stage's time limit still says which tests passed, failed or were skipped, and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "bench" / "pytest_json.py"
TESTS = """
import time
import pytest

def test_passes():
    pass

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

def test_fails():
    assert 1 == 2, "one is not two"

def test_hangs():
    time.sleep(120)
"""


def run_sample(tmp_path: Path, prefix: list[str], pytest_args: list[str]) -> tuple[int, str, dict]:
    """Runs the script over TESTS (under `prefix`, e.g. a timeout); its exit status, stdout and JSON."""
    (tmp_path / "test_sample.py").write_text(TESTS)
    out = tmp_path / "result.json"
    cmd = [*prefix, sys.executable, str(SCRIPT), "--json", str(out), "--", str(tmp_path / "test_sample.py")]
    done = subprocess.run([*cmd, *pytest_args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return done.returncode, done.stdout, json.loads(out.read_text())


def test_a_run_cut_off_keeps_what_finished(tmp_path: Path) -> None:
    returncode, stdout, result = run_sample(tmp_path, ["timeout", "15"], [])
    assert returncode == 124, stdout[-2000:]
    assert result["complete"] is False and result["exit_status"] is None
    outcomes = {t["test"].split("::")[1]: t for t in result["tests"]}
    assert set(outcomes) == {"test_passes", "test_skipped", "test_fails"}
    assert outcomes["test_passes"]["outcome"] == "passed" and "reason" not in outcomes["test_passes"]
    assert (
        outcomes["test_skipped"]["outcome"] == "skipped" and "not here" in outcomes["test_skipped"]["reason"]
    )
    assert (
        outcomes["test_fails"]["outcome"] == "failed" and "one is not two" in outcomes["test_fails"]["reason"]
    )
    assert result["counts"] == {"passed": 1, "skipped": 1, "failed": 1}


def test_a_finished_run_is_complete(tmp_path: Path) -> None:
    returncode, _, result = run_sample(tmp_path, [], ["-k", "not hangs"])
    assert returncode == 1 and result["complete"] is True and result["exit_status"] == 1
    assert len(result["tests"]) == 3
