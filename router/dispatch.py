"""One tier's replicas and its bounded queue: where a request waits when every replica is at its bound.

A request goes straight to the replica `policies.routing.route` picks when nobody is queued; otherwise it joins
the queue, ordered interactive before batch, then by `policies.routing.queue_order` (shortest first). Whenever
capacity may have freed (a first token, a finished request, a refresh, a new replica) the head of the queue is
routed again. Beyond `max_queue` a request gets 429; after `max_wait_s` in the queue, 503 (both with
Retry-After).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from dataclasses import dataclass, field

from goodput.policies.prefix_cache import PrefixCache
from goodput.policies.routing import QUEUE, RoutingPolicy, fresh_tokens, queue_order, route
from goodput.router.errors import too_many, unavailable
from goodput.router.metrics import RouterMetrics
from goodput.router.replicas import Lease, Replica
from goodput.router.requests import CLASSES, Routed


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_queue: int = 1000
    max_wait_s: float = 60.0
    retry_after_s: float = 1.0


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int, int]
    routed: Routed = field(compare=False)
    future: asyncio.Future[Lease] = field(compare=False)
    joined: float = field(compare=False)  # time.monotonic() when this attempt joined the queue
    arrived: float = field(compare=False)  # when the request reached the router: its age, its wait's bound


class Tier:
    def __init__(
        self,
        name: str,
        policy: RoutingPolicy,
        limits: QueueLimits,
        metrics: RouterMetrics,
        cache_blocks: int,
        rng: random.Random | None = None,
    ) -> None:
        self.name, self.policy, self.limits, self.metrics = name, policy, limits, metrics
        self.cache_blocks = cache_blocks
        self.seen = metrics.tier(name)
        self.replicas: dict[str, Replica] = {}
        self._queue: list[_Waiter] = []
        self._queued = 0
        self._seq = itertools.count()
        self._rng = rng or random.Random()
        # exported from the start, so the operator tells an idle router (0) from a missing one
        metrics.queue_depth.labels(name).set(0)
        metrics.in_flight.labels(name).set(0)
        metrics.queue_ages.watch(name, self._held_since)

    # --- replica set -------------------------------------------------------------------------------------

    def set_endpoints(self, urls: list[str]) -> None:
        """The tier's ready endpoints changed (a watch event, or static configuration)."""
        for url in set(self.replicas) - set(urls):
            self._reroute(self.replicas.pop(url))
        for url in urls:
            self.replicas.setdefault(url, Replica(url, PrefixCache(self.cache_blocks)))
        self._count_replicas()
        self.pump()

    def mark_down(self, replica: Replica) -> None:
        """Out of rotation until a refresh answers; requests it has not answered yet go elsewhere."""
        if replica.healthy:
            replica.healthy = False
            replica.cache.clear()
            self._count_replicas()
        self._reroute(replica)

    def mark_up(self, replica: Replica) -> None:
        if not replica.healthy:
            replica.healthy = True
            self._count_replicas()
        self.pump()

    def _reroute(self, replica: Replica) -> None:
        for lease in list(replica.leases):
            if not lease.first_byte and lease.task is not None:
                lease.rerouted = True
                lease.task.cancel()

    def _count_replicas(self) -> None:
        up = sum(r.healthy for r in self.replicas.values())
        self.metrics.replicas.labels(self.name, "up").set(up)
        self.metrics.replicas.labels(self.name, "down").set(len(self.replicas) - up)

    # --- dispatch ----------------------------------------------------------------------------------------

    async def acquire(self, routed: Routed, arrived: float | None = None) -> Lease:
        """A lease on a replica, at once or after queueing; raises RouterError (429 or 503).

        `arrived` (time.monotonic()) is when the request reached the router, earlier than now when a replica
        failed before answering it: the bounded wait and the queue age count from there."""
        if not self._queued:
            lease = self._try(routed)
            if lease is not None:
                self.seen.queue_wait.observe(0.0)
                return lease
        if self._queued >= self.limits.max_queue:
            self.metrics.rejections.labels("queue_full").inc()
            raise too_many(
                f"the {self.name} tier's queue is full ({self._queued} requests)",
                "queue_full",
                self.limits.retry_after_s,
            )
        order = queue_order(routed.prompt_tokens, routed.max_tokens)
        key = (CLASSES.index(routed.request_class), order, next(self._seq))
        now = time.monotonic()
        arrived = now if arrived is None else arrived
        waiter = _Waiter(key, routed, asyncio.get_running_loop().create_future(), now, arrived)
        heapq.heappush(self._queue, waiter)
        self._queued += 1
        self.metrics.queue_depth.labels(self.name).set(self._queued)
        self.pump()
        try:
            left = max(self.limits.max_wait_s - (now - arrived), 0.0)
            return await asyncio.wait_for(asyncio.shield(waiter.future), left)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return waiter.future.result()  # leased as the wait ran out
            self.metrics.rejections.labels("queue_timeout").inc()
            raise unavailable(self._timeout_message(), "queue_timeout", self.limits.retry_after_s) from None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())  # leased just as the client went away
            raise
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
                self._queued -= 1
                self.metrics.queue_depth.labels(self.name).set(self._queued)

    def _timeout_message(self) -> str:
        if not self.in_rotation():
            return (
                f"no replica of the {self.name} tier is ready (scaled to zero, starting or failing) "
                f"after {self.limits.max_wait_s:g} s; retry later"
            )
        return (
            f"every replica of the {self.name} tier stayed busy for {self.limits.max_wait_s:g} s; retry later"
        )

    def _try(self, routed: Routed) -> Lease | None:
        healthy = [r for r in self.replicas.values() if r.healthy]
        loads = [r.load() for r in healthy]
        choice = route(loads, routed.prompt_tokens, routed.blocks, self.policy, self._rng.random())
        if choice == QUEUE:
            return None
        replica = healthy[choice]
        hit = replica.cache.insert(routed.blocks)
        if routed.blocks:
            self.metrics.prefix_hits.labels(self.name).inc(hit)
            self.metrics.prefix_blocks.labels(self.name).inc(len(routed.blocks))
        fresh = fresh_tokens(routed.prompt_tokens, hit, self.policy)
        return Lease(replica, fresh)

    def pump(self) -> None:
        """Route the head of the queue while a replica takes it."""
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # timed out or cancelled: already uncounted
                heapq.heappop(self._queue)
                continue
            lease = self._try(head.routed)
            if lease is None:
                return
            heapq.heappop(self._queue)
            self._queued -= 1
            self.metrics.queue_depth.labels(self.name).set(self._queued)
            lease.queued_s = time.monotonic() - head.joined
            self.seen.queue_wait.observe(lease.queued_s)
            head.future.set_result(lease)

    def answered(self, lease: Lease) -> None:
        lease.answered()
        self.pump()

    def release(self, lease: Lease) -> None:
        lease.end()
        self.pump()

    def _held_since(self) -> list[float]:
        return [w.arrived for w in self._queue if not w.future.done()]

    def in_rotation(self) -> bool:
        return any(r.healthy for r in self.replicas.values())

    @property
    def queued(self) -> int:
        return self._queued
