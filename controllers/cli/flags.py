"""Argument types for the CLI's numeric options: a value out of range is refused by argparse, naming the option
("argument --workers: expected an integer ≥ 1, got '0'"), instead of failing deep in the planner or running on a
meaningless setting."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def _number(
    convert: Callable[[str], N], kind: str, low: float, low_open: bool, high: float | None
) -> Callable[[str], N]:
    bound = f"{'>' if low_open else '≥'} {low:g}" + (f" and < {high:g}" if high is not None else "")

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} {bound}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"expected {kind} {bound}, got {text!r}")
        return value

    return parse


positive_float: Callable[[str], float] = _number(float, "a number", 0.0, True, None)
non_negative_float: Callable[[str], float] = _number(float, "a number", 0.0, False, None)
share: Callable[[str], float] = _number(float, "a number", 0.0, False, 1.0)  # 0 ≤ x < 1, as a headroom
positive_int: Callable[[str], int] = _number(int, "an integer", 1, False, None)
non_negative_int: Callable[[str], int] = _number(int, "an integer", 0, False, None)
