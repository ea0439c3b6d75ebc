"""bench/decode_tune.py, the Triton decode kernel's tuning sweep: on the CPU (Triton's interpreter) its
code path runs, every variant it times is first checked against the reference, and it refuses to run
the kernel on the CPU without the interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def run(tmp_path: Path, interpret: bool) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1" if interpret else "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "decode_tune.py"), "--cpu", "--json", str(tmp_path / "t.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_cpu_sweep_checks_and_times_every_variant(tmp_path: Path) -> None:
    done = run(tmp_path, interpret=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (case,) = json.loads((tmp_path / "t.json").read_text())["cases"]
    assert len(case["variants"]) == 2
    for v in case["variants"]:
        assert "error" not in v and v["rel_error"] < 1e-2 and v["ms"] > 0, v
    assert case["default"] == case["variants"][0] and case["best"] in case["variants"]
    assert case["speedup_best_over_default"] >= 1
    assert case["kv_bytes"] == 2 * case["batch"] * case["context"] * 2 * 64 * 2


def test_cpu_sweep_needs_the_interpreter(tmp_path: Path) -> None:
    done = run(tmp_path, interpret=False)
    assert done.returncode != 0 and "TRITON_INTERPRET=1" in done.stderr
    assert not (tmp_path / "t.json").exists()
