"""Writes to the cluster: apply a plan's children, delete tiers the plan dropped, write status, post events.

Applies are skipped when the built body equals the last one applied (the builders are pure), so a steady
service costs no API writes per interval; after a restart the first apply re-asserts everything (SSA no-op).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from goodput.controllers import builders, naming, router_builders
from goodput.controllers import status as wire
from goodput.controllers.kube import KubeClient
from goodput.controllers.runtime import ServiceRecord
from goodput.policies.types import Candidate

PER_INTERVAL = ("observed", "scaler")  # status fields that change every control interval
STATUS_REFRESH_S = 60.0  # `observed` alone is rewritten every 60-120 s; any other change goes at once


def owner_of(record: ServiceRecord) -> builders.Owner:
    return builders.Owner(name=record.name, namespace=record.namespace, uid=record.uid)


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


async def apply_plan(
    kube: KubeClient, record: ServiceRecord, plan: Candidate, existing_tiers: set[str]
) -> int:
    """Apply what changed of this plan's children, and delete the tiers in `existing_tiers` it no longer has.

    Returns the number of objects written or deleted. A failed write raises; the caller retries, and only
    acknowledged writes are skipped next time. `existing_tiers` comes from the Deployments index and the
    previous plan, so no list request is needed.
    """
    written = 0
    owner = owner_of(record)
    children = builders.build_children(owner, record.spec, plan)
    for child in [*children, *router_builders.build_router_children(owner, record.spec, plan)]:
        key = f"{child['kind']}/{child['metadata']['name']}"
        digest = _digest(child)
        if record.applied.get(key) == digest:
            continue
        await kube.apply(child)
        record.applied[key] = digest
        written += 1
    for tier in sorted(existing_tiers - {str(t.tier) for t in plan.tiers}):
        name = naming.tier_name(record.name, tier)
        await kube.delete("Deployment", record.namespace, name)
        await kube.delete("Service", record.namespace, name)
        record.applied.pop(f"Deployment/{name}", None)
        record.applied.pop(f"Service/{name}", None)
        written += 2
    return written


def refresh_period(record: ServiceRecord) -> float:
    """Between 1 and 2 refresh periods, fixed per service: services created together do not write together."""
    spread = zlib.crc32(f"{record.namespace}/{record.name}".encode()) % 1000 / 1000
    return STATUS_REFRESH_S * (1 + spread)


def status_due(record: ServiceRecord, status: dict[str, Any], now: float) -> bool:
    """Write when anything but the per-interval fields changed, or when those are older than the refresh period.

    `observed` and `scaler` move every interval; writing them at once would mean one patch per service per
    interval. A restart loses at most one refresh period of the scaler's windows, which span several.
    """
    old = {k: v for k, v in record.status.items() if k not in PER_INTERVAL}
    new = {k: v for k, v in status.items() if k not in PER_INTERVAL}
    if old != new:
        return True
    if all(status.get(k) == record.status.get(k) for k in PER_INTERVAL):
        return False
    return now - record.status_written_at >= refresh_period(record)


async def write_status(
    kube: KubeClient, record: ServiceRecord, status: dict[str, Any], now: float, force: bool = False
) -> bool:
    """Patch status when due, with the scaler's windows as of now (built only then: they are the costly part)."""
    if not force and not status_due(record, status, now):
        return False
    status = {**status, "scaler": wire.scaler_status(record.state)}
    await kube.patch_status("InferenceService", record.namespace, record.name, status)
    record.status = status
    record.status_written_at = now
    return True


async def post_event(
    kube: KubeClient, record: ServiceRecord, reason: str, message: str, now: float, kind: str = "Normal"
) -> None:
    await kube.create(builders.build_event(owner_of(record), reason, message, now, kind))
