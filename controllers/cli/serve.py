"""`goodput serve`: the inference worker, which parses its own flags (they pass through untouched)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    def worker_help() -> str:  # the worker's own flags; imported only when asked (torch is slow to import)
        from goodput.worker_image.__main__ import build_parser

        return build_parser("goodput serve").format_help()

    parser.format_help = worker_help  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from goodput.worker_image.__main__ import main as serve

    return serve(args.passthrough)
