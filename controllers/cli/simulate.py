"""`goodput simulate`: replay a trace under goodput and the baselines, and print or save the report.

The options and the command are here; controllers.replay runs the simulations side by side and renders.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from goodput.controllers import replay
from goodput.controllers.cli.flags import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)
from goodput.policies.compare import POLICIES
from goodput.policies.observe import DEFAULT_WINDOW_S


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        required=True,
        help="a trace file (Azure LLM CSV or Mooncake JSONL, detected) or synthetic:diurnal",
    )
    parser.add_argument("--scale", type=positive_float, default=1.0, help="multiply the trace's request rate")
    parser.add_argument(
        "--policies", default=",".join(POLICIES), help="comma-separated subset of " + ",".join(POLICIES)
    )
    parser.add_argument(
        "--start-delay",
        type=non_negative_float,
        default=None,
        help="seconds from pod creation to ready (default: the worker start model, policies/startup.py)",
    )
    parser.add_argument(
        "--window",
        type=positive_float,
        default=float(DEFAULT_WINDOW_S),
        help="seconds each observation covers: the operator's GOODPUT_OPERATOR_WINDOW_S (default %(default)g)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--ttft-ms", type=positive_float, default=1000.0, help="the service's TTFT p95 target (ms)"
    )
    parser.add_argument(
        "--tpot-ms", type=positive_float, default=100.0, help="the service's TPOT p95 target (ms)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="parallel simulations"
    )
    parser.add_argument(
        "--headroom",
        type=share,
        help="SLOPolicy headroom for goodput, in [0, 1) (default: the default policy's)",
    )
    parser.add_argument("--json", dest="json_path", help="write the report as JSON here")
    parser.add_argument("--plot", help="write the frontier and timeline plot (PNG) here")


@contextmanager
def _progress_bar() -> Iterator[replay.Progress]:
    """A bar on stderr counting finished simulations (a full comparison takes minutes); gone when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (TextColumn("simulations"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulate", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def run(args: argparse.Namespace) -> int:
    """Replay the trace under each policy and print one row per policy and setting."""
    from goodput.crds.slopolicy import SLOPolicySpec
    from goodput.policies.workloads import resolve

    names = tuple(n.strip() for n in args.policies.split(",") if n.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise SystemExit(
            f"error: --policies: unknown {', '.join(unknown)}; known: {', '.join(POLICIES)}"
            if unknown
            else f"error: --policies: name at least one of {', '.join(POLICIES)}"
        )
    try:
        trace = resolve(args.trace, scale=args.scale, seed=args.seed)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: --trace: {error}") from None
    policy = SLOPolicySpec(headroom=args.headroom) if args.headroom is not None else None
    interval = (policy or SLOPolicySpec()).evaluation_interval_seconds
    if args.window < interval:
        raise SystemExit(
            f"error: --window: {args.window:g} s is shorter than the {interval:g} s control interval"
        )
    with _progress_bar() as progress:
        try:
            report, runs = replay.run(
                trace,
                names,
                start_delay_s=args.start_delay,
                seed=args.seed,
                policy=policy,
                workers=args.workers,
                progress=progress,
                slo_ms=(args.ttft_ms, args.tpot_ms),
                window_s=args.window,
            )
        except ValueError as error:  # no configuration meets the SLO at the trace's peak
            raise SystemExit(
                f"error: {error} (SLO: TTFT p95 {args.ttft_ms:g} ms, TPOT p95 {args.tpot_ms:g} ms)"
            ) from None
    print(replay.table(report))
    for key, figure in report["targets"].items():
        print(f"target {key}: {figure}")
    for key, figure in report.get("targets_goodput_best_setting", {}).items():
        print(f"target (goodput's best setting) {key}: {figure}")
    print(
        f"{len(trace)} requests over {trace.duration_s / 3600:.2f} h simulated in {report['wall_s']} s. Data: {trace.source or trace.name}"
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(replay.json_ready(report), f, indent=2)
    if args.plot:
        replay.plot(report, runs, args.plot)
    return 0
