"""The `goodput` console script: one argparse parser, one subcommand per verb.

Add a verb by writing `configure(parser)` and `run(args) -> int` and listing them in SUBCOMMANDS; `main`
builds the parser from that table, so each verb stays self-contained.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from controllers import oncall
from policies.display import ms

EXIT_INVALID = 2  # the manifest does not validate
EXIT_INFEASIBLE = 3  # no plan meets the SLO within the limits


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False  # unknown flags go to the verb as `args.passthrough` instead of failing


# ---------------------------------------------------------------- goodput plan


def _configure_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="InferenceService manifest (YAML)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--rps", type=float, help="requests per second to plan for (default: the manifest's hint)"
    )
    load.add_argument("--trace", help="trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens) to plan for")
    parser.add_argument(
        "--peak-window", type=float, help="with --trace: plan for the busiest window of this many s"
    )
    parser.add_argument("--policy", help="SLOPolicy manifest (YAML); the built-in default when absent")
    parser.add_argument(
        "--ttft-factor", type=float, default=1.0, help="calibration: observed / predicted TTFT"
    )
    parser.add_argument(
        "--tpot-factor", type=float, default=1.0, help="calibration: observed / predicted TPOT"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--plot", help="write the latency–throughput frontier of each candidate to this PNG")
    parser.add_argument("--alternatives", type=int, default=5, help="alternatives shown in the table")


def _read_manifest(path: str) -> dict[str, Any] | None:
    from crds.validation import validate_manifest

    try:
        obj = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        print(f"error: cannot read {path}: {error}", file=sys.stderr)
        return None
    if not isinstance(obj, dict):
        print(f"error: {path}: not a YAML object", file=sys.stderr)
        return None
    errors = validate_manifest(obj)
    if errors:
        print(f"error: {path} is invalid:", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return None
    return obj


def _run_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from crds.inferenceservice import InferenceService
    from crds.slopolicy import SLOPolicy, SLOPolicySpec
    from policies import planner
    from policies.profiles import profile_for

    obj = _read_manifest(args.filename)
    if obj is None:
        return EXIT_INVALID
    if obj.get("kind") != "InferenceService":
        print(f"error: {args.filename}: expected an InferenceService, got {obj.get('kind')}", file=sys.stderr)
        return EXIT_INVALID
    spec = InferenceService.model_validate(obj).spec
    policy = SLOPolicySpec()
    if args.policy:
        policy_obj = _read_manifest(args.policy)
        if policy_obj is None:
            return EXIT_INVALID
        policy = SLOPolicy.model_validate(policy_obj).spec
    try:
        profile = profile_for(spec.model)
    except (KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID

    hint = planner.load_from_spec(spec)
    if args.trace:
        load = planner.load_from_trace(
            args.trace, peak_window_s=args.peak_window, batch_fraction=hint.batch_fraction
        )
    else:
        load = hint if args.rps is None else replace(hint, rps=args.rps)
    result = planner.plan(spec, load, policy, args.ttft_factor, args.tpot_factor)
    report = plan_report(spec, load, profile, result)

    if args.plot:
        shown = [c for c in (result.chosen, *result.alternatives) if c is not None and c.replicas > 0]
        curves = [
            planner.frontier(spec, load, c, ttft_factor=args.ttft_factor, tpot_factor=args.tpot_factor)
            for c in shown
        ]
        plot_frontiers(curves, spec, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report, args.alternatives)
    if result.chosen is None:
        print(f"no feasible plan: {result.binding_constraint}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _finite(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def _candidate(c: Any) -> dict[str, Any]:
    return {
        "accelerator": c.accelerator,
        "tensor_parallel": c.tensor_parallel,
        "replicas": c.replicas,
        "gpus": c.replicas * c.tensor_parallel,
        "max_batch": c.max_batch,
        "batch_window_ms": c.batch_window_ms,
        "chunk_tokens": c.chunk_tokens,
        "tier": c.tier,
        "tiers": [
            {
                "tier": t.tier,
                "replicas": t.replicas,
                "max_batch": t.max_batch,
                "batch_window_ms": t.batch_window_ms,
            }
            for t in c.tiers
        ],
        "predicted": {
            "ttft_p95_ms": _finite(c.predicted_ttft_p95_ms),
            "tpot_p95_ms": _finite(c.predicted_tpot_p95_ms),
        },
        "cost_per_hour": _finite(c.cost_per_hour),
        "utilisation": _finite(c.utilisation),
        "rejected": c.rejected,
    }


def plan_report(spec: Any, load: Any, profile: Any, result: Any) -> dict[str, Any]:
    """The JSON form of a plan: the chosen configuration, the model's numbers, the load and the alternatives."""
    chosen = _candidate(result.chosen) if result.chosen is not None else None
    if chosen is not None:
        chosen.pop("rejected")
    return {
        "plan": chosen,
        "binding_constraint": result.binding_constraint,
        "slo": spec.slo.to_wire(),
        "model": {
            "name": profile.name,
            "params": profile.params,
            "dtype": profile.dtype,
            "layers": profile.layers,
            "kv_heads": profile.kv_heads,
            "head_dim": profile.head_dim,
            "weight_bytes": profile.weight_bytes,
            "kv_bytes_per_token": result.kv_bytes_per_token,
        },
        "load": {
            "rps": load.rps,
            "prompt_tokens_p50": float(np.percentile(load.prompt_tokens, 50)),
            "prompt_tokens_p95": float(np.percentile(load.prompt_tokens, 95)),
            "output_tokens_p50": float(np.percentile(load.output_tokens, 50)),
            "output_tokens_p95": float(np.percentile(load.output_tokens, 95)),
            "batch_fraction": load.batch_fraction,
        },
        "alternatives": [_candidate(c) for c in result.alternatives],
    }


def _verdict(label: str, candidate: dict[str, Any], plan: dict[str, Any] | None) -> str:
    if label == "plan":
        return "chosen"
    if plan is not None and candidate["cost_per_hour"] <= plan["cost_per_hour"] + 1e-9:
        return "same cost, ranked after"
    return "costlier"


def _print_table(report: dict[str, Any], alternatives: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    model, load, slo = report["model"], report["load"], report["slo"]
    console.print(
        f"[bold]{model['name']}[/]: {model['params'] / 1e9:.2f} B params, {model['dtype']}, "
        f"KV {model['kv_bytes_per_token']:,} bytes/token · load {load['rps']:.2f} rps, prompt p50/p95 "
        f"{load['prompt_tokens_p50']:.0f}/{load['prompt_tokens_p95']:.0f}, output p50/p95 "
        f"{load['output_tokens_p50']:.0f}/{load['output_tokens_p95']:.0f} · SLO "
        + ", ".join(f"{k} {v}" for k, v in slo.items())
    )
    table = Table(show_lines=False)
    for column in (
        "",
        "accelerator",
        "TP",
        "replicas",
        "max batch",
        "window ms",
        "TTFT p95",
        "TPOT p95",
        "$/h",
        "util",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("", "accelerator", "verdict") else "right")
    rows = ([("plan", report["plan"])] if report["plan"] else []) + [
        ("alt", c) for c in report["alternatives"][:alternatives]
    ]
    for label, c in rows:
        p = c["predicted"]
        table.add_row(
            "[bold green]plan[/]" if label == "plan" else label,
            c["accelerator"],
            str(c["tensor_parallel"]),
            " + ".join(str(t["replicas"]) for t in c["tiers"]) if len(c["tiers"]) > 1 else str(c["replicas"]),
            str(c["max_batch"]),
            f"{c['batch_window_ms']:g}",
            "—" if p["ttft_p95_ms"] is None else f"{ms(p['ttft_p95_ms'])} ms",
            "—" if p["tpot_p95_ms"] is None else f"{ms(p['tpot_p95_ms'])} ms",
            "—" if c["cost_per_hour"] is None else f"{c['cost_per_hour']:.2f}",
            "—" if c["utilisation"] is None else f"{c['utilisation']:.0%}",
            c.get("rejected") or _verdict(label, c, report["plan"]),
        )
    console.print(table)


def plot_frontiers(curves: Sequence[Any], spec: Any, path: str) -> None:
    """TTFT and TPOT p95 against throughput per dollar for each candidate, with the SLO lines and each
    candidate's planned operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for index, curve in enumerate(curves):
        colour = f"C{index % 10}"
        x = curve.rps / curve.replica_cost_per_hour
        style = {"color": colour, "linewidth": 2.4 if index == 0 else 1.2}
        left.plot(x, curve.ttft_p95_ms, label=curve.label + (" (plan)" if index == 0 else ""), **style)
        right.plot(x, curve.tpot_p95_ms, **style)
        if curve.planned_rps > 0:
            at = curve.planned_rps / curve.replica_cost_per_hour
            left.plot([at], [np.interp(curve.planned_rps, curve.rps, curve.ttft_p95_ms)], "o", color=colour)
            right.plot([at], [np.interp(curve.planned_rps, curve.rps, curve.tpot_p95_ms)], "o", color=colour)
    slo = spec.slo
    for axis, name, targets in (
        (left, "TTFT", (("p95", slo.ttft_p95_ms), ("p99", slo.ttft_p99_ms))),
        (right, "TPOT", (("p95", slo.tpot_p95_ms), ("p99", slo.tpot_p99_ms))),
    ):
        for (level, target), style in zip(targets, ("--", ":"), strict=True):
            if target:
                axis.axhline(target, color="red", linestyle=style, label=f"SLO {name} {level} {target:g} ms")
        axis.set_yscale("log")
        axis.set_xlabel("throughput per cost (req/s per $/h of a replica)")
        axis.set_ylabel(f"predicted {name} p95 (ms)")
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.suptitle(f"{spec.model.name}: latency–throughput frontier per configuration (dot: planned load)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------- simulate (controllers.replay owns it)


def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    from controllers.replay import add_arguments

    add_arguments(parser)


def _run_simulate(args: argparse.Namespace) -> int:
    from controllers.replay import command

    return command(args)


# ---------------------------------------------------------------- serve (the worker parses its own flags)


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    def worker_help() -> str:  # the worker's own flags; imported only when asked (torch is slow to import)
        from worker_image.__main__ import build_parser

        return build_parser("goodput serve").format_help()

    parser.format_help = worker_help  # type: ignore[method-assign]


def _run_serve(args: argparse.Namespace) -> int:
    from worker_image.__main__ import main as serve

    return serve(args.passthrough)


# ---------------------------------------------------------------- entry point

SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "plan", "the cheapest configuration predicted to meet the SLO (what-if)", _configure_plan, _run_plan
    ),
    Subcommand(
        "simulate",
        "replay a trace under goodput, HPA, KEDA, static and the hindsight oracle",
        _configure_simulate,
        _run_simulate,
    ),
    Subcommand(
        "status",
        "all InferenceServices: SLO, observed p95s, replicas, plan, conditions, last decision",
        oncall.configure_status,
        oncall.run_status,
    ),
    Subcommand(
        "explain",
        "why a service runs its plan: observations, calibration, alternatives, what would change it",
        oncall.configure_explain,
        oncall.run_explain,
    ),
    Subcommand(
        "serve",
        "run the inference worker (OpenAI-compatible API)",
        _configure_serve,
        _run_serve,
        passthrough=True,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goodput", description="Serve LLMs at their latency SLOs for the fewest GPU dollars."
    )
    verbs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for sub in SUBCOMMANDS:
        sub_parser = verbs.add_parser(sub.name, help=sub.help, description=sub.help)
        sub.configure(sub_parser)
        sub_parser.set_defaults(run=sub.run, accepts_passthrough=sub.passthrough)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not args.accepts_passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.passthrough = extra
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
