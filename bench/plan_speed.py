"""Planning time per service: `policies.planner.plan` on each example manifest, and the full 8-pool search.

The autoscaler re-plans every service each interval, so one plan must take well under a second. Reports the
median and max wall time over repeated runs (after one warm-up), the number of (accelerator, TP) points
searched and the chosen plan. Also times `required_replicas`, the fixed-configuration path.

    python bench/plan_speed.py [--repeat 5] [--json bench/results/plan_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import yaml

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.profiles import profile_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
EVERY_POOL = ["H100-SXM", "H100-PCIe", "H200", "A100-40GB", "A100-80GB", "L40S", "L4"]


def timed(fn, repeat: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def case(name: str, spec: InferenceServiceSpec, rps: float, repeat: int) -> dict[str, object]:
    load = replace(planner.load_from_spec(spec), rps=rps)
    policy = SLOPolicySpec()
    times, result = timed(lambda: planner.plan(spec, load, policy), repeat)
    profile = profile_for(spec.model)
    points = sum(len(planner.tensor_parallel_options(spec, pool, profile)) for pool in spec.accelerators)
    chosen = result.chosen
    entry: dict[str, object] = {
        "case": name,
        "rps": rps,
        "points": points,
        "plan_ms_median": round(statistics.median(times) * 1000, 1),
        "plan_ms_max": round(max(times) * 1000, 1),
        "chosen": None
        if chosen is None
        else {
            "accelerator": chosen.accelerator,
            "tensor_parallel": chosen.tensor_parallel,
            "replicas": chosen.replicas,
            "max_batch": chosen.max_batch,
            "batch_window_ms": chosen.batch_window_ms,
            "ttft_p95_ms": round(chosen.predicted_ttft_p95_ms, 1),
            "tpot_p95_ms": round(chosen.predicted_tpot_p95_ms, 2),
            "cost_per_hour": chosen.cost_per_hour,
        },
        "binding_constraint": result.binding_constraint,
    }
    if chosen is not None:
        fixed, _ = timed(
            lambda: planner.required_replicas(spec, load, policy, chosen.accelerator, chosen.tensor_parallel),
            repeat,
        )
        entry["required_replicas_ms_median"] = round(statistics.median(fixed) * 1000, 1)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default="bench/results/plan_speed.json")
    args = parser.parse_args()

    cases = []
    for path in EXAMPLES:
        spec = InferenceServiceSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
        rps = spec.traffic.expected_rps or planner.DEFAULT_RPS
        cases.append(case(path.stem, spec, rps, args.repeat))
        if path.stem.startswith("chat"):
            cases.append(case(f"{path.stem}@20rps", spec, 20.0, args.repeat))
            every = spec.model_copy(
                update={
                    "accelerators": [
                        spec.accelerators[0].model_copy(
                            update={"type": t, "price_per_hour": None, "max_count": 64}
                        )
                        for t in EVERY_POOL
                    ],
                    "scaling": spec.scaling.model_copy(update={"max_tensor_parallel": 8, "max_replicas": 64}),
                }
            )
            cases.append(case(f"{path.stem}@20rps-every-gpu-tp8", every, 20.0, args.repeat))
    for entry in cases:
        print(
            f"{entry['case']:38} {entry['points']:3d} points  plan {entry['plan_ms_median']:7.1f} ms median "
            f"(max {entry['plan_ms_max']:.1f})  fixed {entry.get('required_replicas_ms_median', '-')} ms  "
            f"→ {entry['chosen'] or entry['binding_constraint']}"
        )
    report = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    }
    report["cases"] = cases
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
