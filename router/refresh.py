"""The light refresh of replica state: each worker's /metrics, read for three vLLM gauges.

vLLM's names (`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`) make any
vLLM-compatible worker routable without a change to it. A replica that does not answer within the timeout is
taken out of rotation at once (its unanswered requests are rerouted) and comes back on its next good answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from goodput.router.dispatch import Tier
from goodput.router.replicas import Replica
from goodput.worker_image import contract

RUNNING = contract.NUM_REQUESTS_RUNNING
WAITING = contract.NUM_REQUESTS_WAITING
KV_USAGE = contract.KV_CACHE_USAGE
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gauges:
    running: int
    waiting: int
    kv_usage: float


def parse_gauges(text: str) -> Gauges:
    """Sum each gauge over its label sets (one per model name); raises ValueError when one is missing."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith((RUNNING, WAITING, KV_USAGE)):
            continue
        try:
            brace = line.find("{")
            name, rest = (line[:brace], line[line.rindex("}") + 1 :]) if brace >= 0 else line.split(" ", 1)
            if name in (RUNNING, WAITING, KV_USAGE):
                found[name] = found.get(name, 0.0) + float(rest.split()[0])
        except (ValueError, IndexError):
            raise ValueError(f"/metrics has a malformed line: {line[:200]!r}") from None
    missing = [n for n in (RUNNING, WAITING, KV_USAGE) if n not in found]
    if missing:
        raise ValueError(f"/metrics lacks {', '.join(missing)}")
    return Gauges(int(found[RUNNING]), int(found[WAITING]), found[KV_USAGE])


async def refresh_replica(
    session: aiohttp.ClientSession, tier: Tier, replica: Replica, timeout_s: float
) -> None:
    try:
        async with session.get(replica.url + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status != 200:
                raise ValueError(f"/metrics answered {r.status}")
            gauges = parse_gauges(await r.text())
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        if replica.healthy:
            log.warning(
                "%s leaves the %s tier's rotation: %s", replica.url, tier.name, error or type(error).__name__
            )
        tier.mark_down(replica)
        return
    replica.refreshed(gauges.running, gauges.waiting, gauges.kv_usage)
    tier.mark_up(replica)


async def refresh_forever(
    session: aiohttp.ClientSession, tiers: Iterable[Tier], interval_s: float, timeout_s: float
) -> None:
    """Every interval, all replicas at once; the timeout stays below the interval so a silent replica is out of
    rotation within one refresh."""
    tiers = list(tiers)
    while True:
        await asyncio.gather(
            *(refresh_replica(session, t, r, timeout_s) for t in tiers for r in list(t.replicas.values()))
        )
        await asyncio.sleep(interval_s)
