"""Simulator speed (issue 15 item 6): one hour at 100 requests/s replayed with every policy and sweep.

A steady Poisson hour with a chat token mix (prompts p50/p95 1,000/4,000, outputs 130/500 tokens), the
shape of the production trace the issue timed; the target is under 60 s on a 2-core machine.

    python bench/sim_speed.py [--rps 100] [--hours 1] [--workers 2] [--profile OUT.prof] [--json PATH]

`--profile` runs one goodput and one HPA simulation under cProfile instead, and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

import numpy as np

from goodput.controllers.cli.flags import non_negative_int, positive_float, positive_int
from goodput.controllers.replay import run
from goodput.policies.compare import POLICIES, setup, sweep_jobs
from goodput.policies.simulator import simulate
from goodput.policies.workloads import poisson


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the worker pool): the machine is shared, so
    wall time alone says as much about the neighbours as about the simulator."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rps", type=positive_float, default=100.0)
    parser.add_argument("--hours", type=positive_float, default=1.0)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--profile", help="write a cProfile of two simulations here and print the top")
    parser.add_argument("--json", help="write the timing and the report here")
    args = parser.parse_args()
    rps = args.rps
    trace = poisson(
        "steady-chat",
        lambda t: np.full(len(t), rps),
        rps,
        args.hours * 3600.0,
        (1000.0, 4000.0),
        (130.0, 500.0),
        seed=args.seed,
    )
    if args.profile:
        s = setup(trace, seed=args.seed)
        jobs = dict(reversed(sweep_jobs(s, ("goodput", "hpa"))))  # each policy's first setting
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for _, (controller, cfg, setting) in jobs.items():
            simulate(trace, controller, cfg, setting)
        profile.disable()
        print(f"{len(jobs)} simulations of {len(trace)} requests in {time.perf_counter() - started:.1f} s")
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(15)
        return 0
    started, cpu0 = time.perf_counter(), _cpu_s()
    report, runs = run(trace, POLICIES, seed=args.seed, workers=args.workers)
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu0
    simulations = sum(len(r) for r in runs.values())
    print(
        f"{len(trace)} requests, {simulations} simulations, every policy and sweep: {wall:.1f} s wall, "
        f"{cpu:.1f} CPU-s in all processes (wall / workers on an idle machine)"
    )
    for name, entry in report["policies"].items():
        print(
            f"  {name:8} {entry['setting']:22} attainment {entry['attainment']:.4%} GPU-h {entry['gpu_hours']}"
        )
    if args.json:
        out = {
            "requests": len(trace),
            "simulations": simulations,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "load_average_1m": os.getloadavg()[0],
            "report": report,
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
