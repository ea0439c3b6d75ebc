"""Routing benchmark (issue 19): routing in simulation (part a), on the real stack (part b), router overhead (c).

    python -m bench.routing --json bench/results/routing.json [--parts simulation,autoscaled] [--streams 1000]
    python -m bench.routing --parts real_stack   # starts and stops its own real stack (one per machine)

Writes {"simulation": {"mooncake" | "code": {"service" | "random" | "least_load" | "prefix": {"prefix_hit_rate",
"ttft_p95_ms", "tpot_p95_ms", "attainment", ...} (means over seeds 0-2), "seeds": {SEED: {...}}}}, "autoscaled": {"service" | "random" | "prefix": {"gpu_hours",
"attainment", ...} (means over seeds 0-2), "prefix_gpu_hours_saved" (against random),
"prefix_gpu_hours_saved_vs_service", "seeds": {SEED: {...}}} on one H100 per replica, "autoscaled_planner_tp" the
same with the planner choosing the TP degree (up to 8), "real_stack": {"service" | "router": {"prefix_hit_rate",
"ttft_p95_ms", ...}, "setting"}, "overhead": {"ttft_added_p50_ms", "ttft_added_p99_ms", "chunks_per_s_per_core",
...}}; "service" is the fleet without the router (a Kubernetes Service), the others the router's policies. The
parts not run keep their earlier figures in the file. real_stack needs the real node's binaries and images (see
e2e/README.md) and runs only on its own (bench/routing_real.py describes the setting).

Targets. Simulation (Mooncake, fixed fleet): prefix-aware routing ≥ 2× random's hit rate and ≤ 0.6× its TTFT
p95; autoscaled, ≥ 20% fewer GPU-hours at ≥ 99% attainment. Overhead: added TTFT p50 ≤ 1 ms and p99 ≤ 5 ms,
≥ 20,000 streamed chunks/s per router core, at 1,000 concurrent streams; the TTFT difference only means something
on a machine with idle cores (the JSON records the load). bench/routing_simulation.py cites the traces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import routing_real, routing_simulation
from bench.router_overhead import measure
from goodput.controllers.cli.flags import positive_float, positive_int
from goodput.policies.compare import ServiceShape

PARTS = ("simulation", "autoscaled", "real_stack", "overhead")
# the autoscaled comparison on one H100 per replica, and with the planner choosing the TP degree (up to 8)
AUTOSCALED_SHAPES = {
    "autoscaled": ServiceShape(),
    "autoscaled_planner_tp": ServiceShape(max_tensor_parallel=8),
}
TARGETS = {
    "router_added_p50_ms": 1.0,
    "router_added_p99_ms": 5.0,
    "ttft_added_p50_ms": 1.0,
    "ttft_added_p99_ms": 5.0,
    "chunks_per_s_per_core": 20_000,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/routing.json"))
    parser.add_argument(
        "--parts", default="simulation,autoscaled,overhead", help=f"comma-separated, of {', '.join(PARTS)}"
    )
    parser.add_argument("--streams", type=positive_int, default=1000)
    parser.add_argument("--seconds", type=positive_float, default=10.0)
    parser.add_argument(
        "--fleet-fraction", type=positive_float, default=1.0, help="of the planner's peak fleet"
    )
    parser.add_argument(
        "--conversations", type=positive_int, default=30, help="real_stack: Mooncake conversations"
    )
    parser.add_argument(
        "--rps", type=positive_float, default=1.5, help="real_stack: request rate of each phase"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}")
    out: dict[str, object] = json.loads(args.json.read_text()) if args.json.exists() else {}
    if "simulation" in parts:
        out["simulation"] = routing_simulation.simulation(args.fleet_fraction)
        for trace in ("mooncake", "code"):
            result = out["simulation"][trace]  # type: ignore[index]
            print(f"== {trace}: {result['replicas']} replicas, SLO {result['slo']}, means over seeds")
            for kind in (routing_simulation.SERVICE, *routing_simulation.KINDS):
                print(f"  {kind:10s} {result[kind]}")
        moon = out["simulation"]["mooncake"]  # type: ignore[index]
        for label, run in (("mean", moon), *((f"seed {seed}", r) for seed, r in moon["seeds"].items())):  # type: ignore[union-attr]
            hits = run["prefix"]["prefix_hit_rate"] / max(run["random"]["prefix_hit_rate"], 1e-9)
            ttft = run["prefix"]["ttft_p95_ms"] / run["random"]["ttft_p95_ms"]
            print(
                f"prefix / random on Mooncake ({label}): hit rate {hits:.2f}× (target ≥ 2), "
                f"TTFT p95 {ttft:.3f}× (target ≤ 0.6)"
            )
    if "autoscaled" in parts:
        for key, shape in AUTOSCALED_SHAPES.items():
            auto = routing_simulation.autoscaled_part(shape=shape)
            out[key] = auto
            print(f"== mooncake, {key} (TP up to {shape.max_tensor_parallel})")
            for seed, run in auto["seeds"].items():  # type: ignore[attr-defined]
                print(f"  seed {seed}: {run}")
            for baseline, key_saved in (
                ("random", "prefix_gpu_hours_saved"),
                ("service", "prefix_gpu_hours_saved_vs_service"),
            ):
                saved = auto[key_saved]
                print(
                    f"prefix saves {saved['mean']:.1%} GPU-hours against {baseline} on average, "  # type: ignore[index]
                    f"{saved['least']:.1%} on its worst seed (target ≥ 20% at ≥ 99% attainment; attainment "  # type: ignore[index]
                    f"prefix {auto['prefix']['attainment']:.2%}, {baseline} {auto[baseline]['attainment']:.2%})"  # type: ignore[index]
                )
    if "real_stack" in parts:
        out["real_stack"] = routing_real.measure(args.conversations, args.rps)
        for phase in ("service", "router"):
            print(f"real stack, through the {phase}: {out['real_stack'][phase]}")  # type: ignore[index]
    if "overhead" in parts:
        out["overhead"] = measure(args.streams, args.seconds)
        for key, value in out["overhead"].items():  # type: ignore[union-attr]
            target = TARGETS.get(key)
            if target is None:
                print(f"{key}: {value}")
                continue
            at_least = key.startswith("chunks")
            met = value >= target if at_least else value <= target
            print(
                f"{key}: {value} (target {'≥' if at_least else '≤'} {target}: {'met' if met else 'NOT met'})"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
