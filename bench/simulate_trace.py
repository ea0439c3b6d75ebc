"""Trace-replay benchmark (issue 6): goodput's autoscaler against HPA, KEDA, static and the hindsight oracle.

Runs both workloads, the Azure code trace rate-scaled and the synthetic diurnal trace, prints the tables and
writes one JSON with both reports. Data: Azure LLM inference trace 2023 (code), Patel et al., Splitwise,
ISCA 2024; Azure public dataset, CC-BY 4.0.

    python bench/simulate_trace.py --json bench/results/simulate_trace.json [--plot-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from goodput.controllers.replay import json_ready, plot, run, table
from goodput.policies.compare import POLICIES
from goodput.policies.workloads import AZURE_CODE_TRACE, CITATION, diurnal, load_csv, scale_rate

CODE_SCALE = 4.5  # the code trace's peak 15 s rate then needs 8+ replicas of Llama-3-8B on H100
DIURNAL_MEAN_RPS = 40.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", default="bench/results/simulate_trace.json")
    parser.add_argument("--plot-dir", default=None)
    parser.add_argument("--code-scale", type=float, default=CODE_SCALE)
    parser.add_argument("--diurnal-rps", type=float, default=DIURNAL_MEAN_RPS)
    parser.add_argument("--diurnal-hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel simulations")
    args = parser.parse_args()

    source = load_csv(AZURE_CODE_TRACE)
    workloads = {
        "code": scale_rate(source, args.code_scale, seed=args.seed),
        "diurnal": diurnal(source, hours=args.diurnal_hours, mean_rps=args.diurnal_rps, seed=args.seed),
    }
    out = {"data": CITATION, "workloads": {}}
    for name, trace in workloads.items():
        report, runs = run(trace, POLICIES, seed=args.seed, workers=args.workers)
        print(
            f"\n== {name}: {len(trace)} requests, {trace.duration_s / 3600:.2f} h, simulated in {report['wall_s']} s"
        )
        print(table(report))
        for key, figure in report["targets"].items():
            print(f"target {key}: {figure}")
        for key, figure in report.get("targets_goodput_best_setting", {}).items():
            print(f"target (goodput's best setting) {key}: {figure}")
        out["workloads"][name] = json_ready(report)
        if args.plot_dir:
            Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
            plot(report, runs, str(Path(args.plot_dir) / f"simulate_{name}.png"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.json}. Data: {CITATION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
