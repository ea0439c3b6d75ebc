"""`goodput serve`: the inference worker, which parses its own flags (they pass through untouched)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Worker flags, e.g. --model random:tiny --port 8000: see `python -m worker_image --help`."


def run(args: argparse.Namespace) -> int:
    from worker_image.__main__ import main as serve

    return serve(args.passthrough)
