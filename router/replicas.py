"""One replica as the router sees it: its own in-flight accounting between refreshes, the refresh's gauges,
and an estimate of the prefix blocks it holds (what the router sent it, evicted as the worker evicts)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from goodput.policies.prefix_cache import PrefixCache
from goodput.policies.routing import ReplicaLoad


@dataclass(eq=False)
class Replica:
    url: str
    cache: PrefixCache
    in_flight: int = 0
    prefill_tokens: int = 0
    running: int = 0  # from the last refresh
    waiting: int = 0
    kv_usage: float = 0.0
    in_flight_at_refresh: int = 0
    healthy: bool = True
    leases: set[Lease] = field(default_factory=set)

    def load(self) -> ReplicaLoad:
        """The refresh's requests moved by what this router sent or finished since: fresh between refreshes,
        and still counting other routers' requests."""
        total = max(self.running + self.waiting + self.in_flight - self.in_flight_at_refresh, self.in_flight)
        running = min(self.running, total)
        return ReplicaLoad(self.prefill_tokens, running, total - running, self.kv_usage, self.cache)

    def refreshed(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running, self.waiting, self.kv_usage = running, waiting, kv_usage
        self.in_flight_at_refresh = self.in_flight


@dataclass(eq=False)
class Lease:
    """One request's claim on a replica, from dispatch until its response ends."""

    replica: Replica
    fresh_tokens: int  # prompt tokens the replica must prefill (not in its estimated cache)
    first_byte: bool = False
    rerouted: bool = False  # the replica went down before answering: the request is sent elsewhere
    task: asyncio.Task[object] | None = None  # the handler forwarding it, cancelled to reroute
    queued_s: float = 0.0  # how long the request waited in its tier's queue for this lease

    def __post_init__(self) -> None:
        self.replica.in_flight += 1
        self.replica.prefill_tokens += self.fresh_tokens
        self.replica.leases.add(self)

    def answered(self) -> None:
        """The first bytes came back: the prompt is prefilled."""
        if not self.first_byte:
            self.first_byte = True
            self.replica.prefill_tokens -= self.fresh_tokens

    def end(self) -> None:
        self.answered()
        self.replica.in_flight -= 1
        self.replica.leases.discard(self)
