"""Conditions per the Kubernetes API conventions: a transition time that moves only when the status moves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ORDER = ("Ready", "SLOMet", "MetricsAvailable", "CapacityLimited", "InvalidSpec")


@dataclass(frozen=True)
class Cond:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str  # CamelCase, machine-readable
    message: str  # one human sentence


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    existing: Iterable[dict[str, Any]], updates: Iterable[Cond], generation: int | None, now: datetime
) -> list[dict[str, Any]]:
    """New condition list: updated types replace old ones; lastTransitionTime kept unless status changed."""
    by_type = {c["type"]: dict(c) for c in existing if "type" in c}
    for update in updates:
        old = by_type.get(update.type)
        changed = old is None or old.get("status") != update.status
        entry = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": timestamp(now) if changed else old["lastTransitionTime"],
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[update.type] = entry
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(by_type.values(), key=lambda c: (rank.get(c["type"], len(ORDER)), c["type"]))


def find(conditions: Iterable[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)
