"""bench/engine_gpu.py and bench/gpu_env.py refuse a machine without a GPU with a clear message (their
CPU code paths run in tests/bench/test_gpu_check_dry_run.py, through the GPU check's rehearsal)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(("script", "hint"), [("engine_gpu", "--smoke"), ("gpu_env", "--cpu")])
def test_full_run_needs_a_gpu(tmp_path: Path, script: str, hint: str) -> None:
    done = subprocess.run(  # as documented: from the checkout's root, where `bench` is importable
        [sys.executable, "-m", f"bench.{script}", "--json", str(tmp_path / "x.json")],
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode != 0
    assert "needs a CUDA GPU" in done.stderr and hint in done.stderr
    assert not (tmp_path / "x.json").exists()
