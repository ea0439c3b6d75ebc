"""`goodput simulate`: replay a trace under goodput and the baselines; the replay machinery owns the flags."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from policies.compare import add_arguments

    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from policies.compare import command

    return command(args)
