"""`goodput simulate`: replay a trace under goodput and the baselines; controllers.replay owns its flags and machinery."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from goodput.controllers.replay import add_arguments

    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from goodput.controllers.replay import command

    return command(args)
