"""Entries of the planner's named tables (accelerators, model presets), or an error that lists the known names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def by_name(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name]`; a KeyError naming `what` was asked for and every name there is, when it is missing."""
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(table)}") from None
