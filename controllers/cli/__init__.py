"""The `goodput` console script: one argparse parser, one module per verb.

Add a verb by writing a module with `configure(parser)` and `run(args) -> int` and listing it in SUBCOMMANDS;
`main` builds the parser from that table, so each verb stays self-contained. Shared formatting is in
`render`, where on-call reads from in `reading` and controllers.oncall.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from goodput.controllers.cli import explain, plan, serve, simulate, status
from goodput.controllers.cli.plan import EXIT_INFEASIBLE, EXIT_INVALID

__all__ = ["EXIT_INFEASIBLE", "EXIT_INVALID", "build_parser", "main"]


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False  # unknown flags go to the verb as `args.passthrough` instead of failing


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "plan", "the cheapest configuration predicted to meet the SLO (what-if)", plan.configure, plan.run
    ),
    Subcommand(
        "simulate",
        "replay a trace under goodput, HPA, KEDA, static and the hindsight oracle",
        simulate.configure,
        simulate.run,
    ),
    Subcommand(
        "status",
        "all InferenceServices: SLO, observed p95s, replicas, plan, conditions, last decision",
        status.configure,
        status.run,
    ),
    Subcommand(
        "explain",
        "why a service runs its plan: observations, calibration, alternatives, what would change it",
        explain.configure,
        explain.run,
    ),
    Subcommand(
        "serve",
        "run the inference worker (OpenAI-compatible API)",
        serve.configure,
        serve.run,
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
