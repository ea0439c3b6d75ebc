"""bench/gpu_check.sh --dry-run: every stage of the GPU check runs its code path on the CPU and writes the
same JSON files a GPU run returns, so a scarce GPU lease never fails for a reason a CPU could catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
STAGES = ["wheels", "env", "tests", "bench", "cold_start"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    return out, done


def load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_every_stage_passes_and_is_summarized(dry_run) -> None:
    out, done = dry_run
    log = (out / "gpu_check.log").read_text()
    assert done.returncode == 0, done.stdout[-2000:] + log[-4000:]
    summary = load(out, "summary.json")
    assert summary["dry_run"] is True
    assert [s["stage"] for s in summary["stages"]] == STAGES
    for s in summary["stages"]:
        assert s["status"] == "ok" and s["rc"] == 0 and 0 <= s["seconds"] <= s["budget_s"], s
    assert {p.name for p in out.iterdir()} == {
        "summary.json",
        "gpu_check.log",
        "env.json",
        "gpu_tests.json",
        "engine_gpu.json",
        "cold_start.json",
        "verdict.json",
    }  # the device tool returns at most 8 files


def test_verdict_reads_every_stage(dry_run) -> None:
    out, done = dry_run
    verdict = load(out, "verdict.json")
    assert verdict["gpu_tests_pass"]["status"] == "met"
    assert verdict["greedy_parity"] == {"value": True, "status": "met"}
    for name in ("cold_start_ready_s", "tpot_bs1_over_roofline"):  # figures without a bar
        assert verdict[name]["status"] == "reported" and verdict[name]["value"] > 0, name
    for name in ("output_tokens_per_s", "speedup_vs_hf_continuous", "tpot_bs1_ms"):
        assert verdict[name]["value"] > 0 and verdict[name]["status"] in ("met", "not met"), name
    assert done.stdout.rstrip().splitlines()[-1].startswith("cold_start_ready_s")  # the table is printed last


def test_env_describes_the_machine(dry_run) -> None:
    env = load(dry_run[0], "env.json")
    assert env["device"].startswith("cpu")
    assert env["copy_bandwidth_gb_s"] > 0 and env["matmul_bf16_tflops"] > 0
    assert env["versions"]["torch"] and env["versions"]["fastapi"]


def test_gpu_tests_ran_on_the_cpu(dry_run) -> None:
    tests = load(dry_run[0], "gpu_tests.json")
    assert tests["complete"] and tests["exit_status"] == 0
    outcomes = {t["test"].split("::")[1].split("[")[0]: t["outcome"] for t in tests["tests"]}
    skipped = {name for name, outcome in outcomes.items() if outcome == "skipped"}
    assert skipped == {"test_kv_pool_fills_free_memory", "test_tp2_over_nccl_matches_tp1"}
    assert set(outcomes.values()) == {"passed", "skipped"}
    assert tests["counts"]["passed"] >= 15  # kernel cases, graphs, sync, parity per architecture


def test_bench_writes_every_figure(dry_run) -> None:
    result = load(dry_run[0], "engine_gpu.json")
    assert result["complete"] and result["device"] == "cpu (smoke)"
    assert result["parity"]["greedy_parity"] is True and not result["parity"]["mismatches"]
    assert result["ours"]["output_tokens"] == result["hf_continuous"]["output_tokens"] > 0
    assert 0 < result["hf_static"]["output_tokens"] <= result["ours"]["output_tokens"]
    for system in ("ours", "hf_continuous", "hf_static"):
        assert result[system]["output_tokens_per_s"] > 0
    assert result["ours"]["tpot_bs1_ms"] > 0 and result["hf_static"]["tpot_bs1_ms"] > 0
    roofline = 1000 * result["weight_bytes"] / (result["copy_bandwidth_gb_s"] * 1e9)
    assert result["roofline_tpot_bs1_ms"] == pytest.approx(roofline)
    ratio = result["ours"]["tpot_bs1_ms"] / result["roofline_tpot_bs1_ms"]
    assert result["tpot_bs1_over_roofline"] == pytest.approx(ratio)
    speedup = result["ours"]["output_tokens_per_s"] / result["hf_continuous"]["output_tokens_per_s"]
    assert result["speedup_vs_hf_continuous"] == pytest.approx(speedup)
    profile = result["ours"]["decode_step_profile"]
    assert profile["batch"] == result["requests"] and profile["steps"] > 0 and profile["step_ms_median"] > 0
    functions = profile["top_functions_by_own_time"]
    assert functions and all(f["own_ms_per_step"] <= f["cumulative_ms_per_step"] + 1e-9 for f in functions)


def test_cold_start_has_the_schema_the_simulator_reads(dry_run) -> None:
    cold = load(dry_run[0], "cold_start.json")
    assert cold["schema"] == "goodput.cold_start/1" and cold["device"].startswith("cpu")
    (run,) = cold["runs"]
    assert run["model"] == "random:tiny" and run["device"] == "cpu"
    assert 0 < run["health_s"] <= run["ready_s"]
    phases = run["phases_s"]
    assert set(phases) == {"interpreter", "imports", "load_weights", "kv_sizing", "engine", "warm_up"}
    assert all(v >= 0 for v in phases.values())
    assert phases["load_weights"] + phases["kv_sizing"] <= phases["engine"] <= run["ready_s"]
    assert run["weight_bytes"] > 0 and run["num_kv_blocks"] > 0 and run["cuda_graph_sizes"] == 0
