"""The GPU check's acceptance figures (issue 16), read from the stages' JSON files and printed last, so the
device tool's output tail answers whether the engine met them; a stage that wrote nothing is 'missing'.

    python bench/gpu_verdict.py --out $OUT    # writes $OUT/verdict.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MIN_TOKENS_PER_S = 15_000  # nano-vllm's figure on this workload, the bar issue 16 sets
MIN_SPEEDUP_VS_HF_CONTINUOUS = 3.0
MAX_TPOT_BS1_MS = 2.0


def load(out: Path, name: str) -> dict | None:
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def check(value: Any, ok: bool | None) -> dict:
    """`ok` None: a figure reported without a bar."""
    if value is None:
        return {"value": None, "status": "missing"}
    return {"value": value, "status": "reported" if ok is None else "met" if ok else "not met"}


def verdict(out: Path) -> dict[str, dict]:
    tests, bench, cold = (
        load(out, "gpu_tests.json"),
        load(out, "engine_gpu.json"),
        load(out, "cold_start.json"),
    )
    checks: dict[str, dict] = {}
    checks["gpu_tests_pass"] = check(None, None)
    if tests is not None:
        bad = {k: v for k, v in tests["counts"].items() if k not in ("passed", "skipped")}
        checks["gpu_tests_pass"] = check(tests["counts"], tests["exit_status"] == 0 and not bad)
    bench = bench or {}
    ours = bench.get("ours", {})
    parity = bench.get("parity", {}).get("greedy_parity")
    checks["greedy_parity"] = check(parity, parity is True)
    tok_s = ours.get("output_tokens_per_s")
    checks["output_tokens_per_s"] = check(tok_s, tok_s is not None and tok_s >= MIN_TOKENS_PER_S)
    speedup = bench.get("speedup_vs_hf_continuous")
    checks["speedup_vs_hf_continuous"] = check(
        speedup, speedup is not None and speedup >= MIN_SPEEDUP_VS_HF_CONTINUOUS
    )
    tpot = ours.get("tpot_bs1_ms")
    checks["tpot_bs1_ms"] = check(tpot, tpot is not None and tpot <= MAX_TPOT_BS1_MS)
    ratio = bench.get("tpot_bs1_over_roofline")
    checks["tpot_bs1_over_roofline"] = check(ratio, None)
    ready = [r["ready_s"] for r in (cold or {}).get("runs", [])]
    checks["cold_start_ready_s"] = check(ready[0] if ready else None, None)
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder the stages wrote to")
    args = parser.parse_args()
    checks = verdict(args.out)
    (args.out / "verdict.json").write_text(json.dumps(checks, indent=2))
    for name, c in checks.items():
        print(f"{name:28s} {c['status']:8s} {json.dumps(c['value'])}")


if __name__ == "__main__":
    main()
