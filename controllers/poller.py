"""The shared poller: one task per operator process, one fixed query set per interval for all services.

Every tick it reads Prometheus once (four queries, whatever the number of services), then evaluates each
service whose policy interval has elapsed. A failed read is not retried within the tick: every service
holds with MetricsAvailable=False, and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from goodput.controllers import reconcile
from goodput.controllers.metrics import (
    INTERVALS,
    LAST_POLL_DURATION,
    LAST_READ_DURATION,
    POLL_DURATION,
    PROMETHEUS_QUERIES,
    PROMETHEUS_UP,
    RECONCILE_ERRORS,
    SERVICES,
    export_services,
)
from goodput.controllers.prometheus import PrometheusError, ServiceKey, Snapshot
from goodput.controllers.runtime import Runtime, ServiceRecord

log = logging.getLogger("goodput.poller")


def ready_by_service(index: object) -> dict[ServiceKey, dict[str, tuple[int, int]]]:
    """(namespace, service) → tier → (desired, ready), from the kopf index over the workers' Deployments."""
    out: dict[ServiceKey, dict[str, tuple[int, int]]] = defaultdict(dict)
    if index is None:
        return out
    for key, entries in index.items():  # type: ignore[attr-defined]
        for tier, desired, ready in entries:
            out[key][tier] = (desired, ready)
    return out


async def _read(rt: Runtime, now: float) -> Snapshot | None:
    before, started = rt.prometheus.queries_sent, time.perf_counter()
    try:
        snapshot = await rt.prometheus.read(now)
        PROMETHEUS_UP.set(1)
        return snapshot
    except PrometheusError as error:
        PROMETHEUS_UP.set(0)
        log.warning("metrics unavailable this interval: %s", error)
        return None
    finally:
        PROMETHEUS_QUERIES.inc(rt.prometheus.queries_sent - before)
        LAST_READ_DURATION.set(time.perf_counter() - started)


async def _evaluate(
    rt: Runtime, record: ServiceRecord, snapshot: Snapshot | None, ready: dict, now: float
) -> None:
    try:
        await reconcile.evaluate(rt, record, snapshot, ready.get(record.key, {}), now)
    except Exception:
        RECONCILE_ERRORS.labels(stage="evaluate").inc()
        log.exception("evaluating %s/%s failed; it holds until the next interval", *record.key)


async def run_interval(rt: Runtime, now: float) -> int:
    """One control interval; returns how many services were evaluated."""
    started = time.perf_counter()
    snapshot = await _read(rt, now)
    ready = ready_by_service(rt.ready_replicas)
    due = []
    for record in list(rt.services.values()):
        try:
            policy = await rt.policy(record.spec.policy_ref)
        except LookupError:
            continue
        if now - record.last_evaluated >= policy.evaluation_interval_seconds - rt.config.poll_interval_s / 2:
            due.append(record)
    await asyncio.gather(*(_evaluate(rt, record, snapshot, ready, now) for record in due))
    await reconcile.refresh_policy_users(rt)
    SERVICES.set(len(rt.services))
    export_services(rt.services.values())
    elapsed = time.perf_counter() - started
    POLL_DURATION.observe(elapsed)
    LAST_POLL_DURATION.set(elapsed)
    INTERVALS.inc()
    rt.last_interval_end = time.time()
    return len(due)


async def poll_forever(rt: Runtime) -> None:
    """Tick at the configured interval, aligned to a fixed grid so one slow interval does not drift the rest."""
    interval = rt.config.poll_interval_s
    next_tick = time.monotonic()
    while True:
        try:
            await run_interval(rt, time.time())
        except Exception:
            RECONCILE_ERRORS.labels(stage="poll").inc()
            log.exception("control interval failed")
        next_tick += interval
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        if next_tick < time.monotonic():
            next_tick = time.monotonic()
