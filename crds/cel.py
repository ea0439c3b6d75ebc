"""Evaluate the CEL rules of the custom resources the way the API server does, with cel-python."""

from __future__ import annotations

from functools import cache
from typing import Any

import celpy

from goodput.crds.rules import Rule

_ENV = celpy.Environment()


@cache
def _program(rule: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(rule))


def holds(rule: str, obj: dict[str, Any]) -> bool:
    """Whether `rule` accepts `obj` bound as `self`; an evaluation error counts as a rejection."""
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(obj)})
    except celpy.CELEvalError:
        return False
    if isinstance(result, celpy.CELEvalError):
        return False
    return bool(result)


def first_violation(rules: tuple[Rule, ...], obj: dict[str, Any]) -> Rule | None:
    """The first rule that `obj` breaks, or None."""
    return next((rule for rule in rules if not holds(rule.rule, obj)), None)
