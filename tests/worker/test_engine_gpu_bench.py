"""bench/engine_gpu.py: its --smoke run exercises every measurement on the CPU and writes the JSON the
issue asks for; the real run refuses a machine without a GPU with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "engine_gpu.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SCRIPT.parents[1],
    )


def test_smoke_run_writes_the_result_json(tmp_path: Path) -> None:
    out = tmp_path / "engine_gpu.json"
    done = run("--smoke", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu (smoke)"
    requested = result["ours"]["output_tokens"]
    assert requested == result["hf_continuous"]["output_tokens"] == result["hf_static"]["output_tokens"] > 0
    for system in ("ours", "hf_continuous", "hf_static"):
        assert result[system]["output_tokens_per_s"] > 0
    assert result["ours"]["tpot_bs1_ms"] > 0 and "tpot_bs1_ms" in result["hf_static"]
    assert result["weight_bytes"] > 0 and result["copy_bandwidth_gb_s"] > 0
    roofline = 1000 * result["weight_bytes"] / (result["copy_bandwidth_gb_s"] * 1e9)
    assert result["roofline_tpot_bs1_ms"] == pytest.approx(roofline)
    ratio = result["ours"]["tpot_bs1_ms"] / result["roofline_tpot_bs1_ms"]
    assert result["tpot_bs1_over_roofline"] == pytest.approx(ratio)


def test_full_run_needs_a_gpu(tmp_path: Path) -> None:
    done = run("--json", str(tmp_path / "x.json"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode != 0
    assert "needs a CUDA GPU" in done.stderr
    assert not (tmp_path / "x.json").exists()
