"""Latencies as people read them in messages, status and the CLI: significant digits, never whole milliseconds.

Targets go down to fractions of a millisecond (a tiny model decodes in 0.1 ms), so rounding to whole
milliseconds printed `tpotP95Ms: 0.1` as "0 ms" and a 4.4 ms prediction against a 4 ms target as "4 ms > 4 ms".
"""

from __future__ import annotations

import math

SIGNIFICANT = 3
MAX_SIGNIFICANT = 9


def ms(value: float | None, significant: int = SIGNIFICANT) -> str:
    """A millisecond value without its unit: `significant` digits, all the integer digits, no exponent."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "∞" if value > 0 else ("-∞" if value < 0 else "nan")
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(significant - 1 - magnitude, 0)
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def ms_pair(value: float, limit: float) -> tuple[str, str]:
    """Both values with enough digits that unequal values never print the same ("4 ms > 4 ms")."""
    for significant in range(SIGNIFICANT, MAX_SIGNIFICANT + 1):
        shown = ms(value, significant), ms(limit, significant)
        if value == limit or shown[0] != shown[1]:
            return shown
    return ms(value, MAX_SIGNIFICANT), ms(limit, MAX_SIGNIFICANT)


def exceeds(value: float, limit: float) -> str:
    """ "a ms > b ms", each with the digits it takes to tell them apart."""
    shown, target = ms_pair(value, limit)
    return f"{shown} ms > {target} ms"
