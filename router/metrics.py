"""The router's own metrics, under goodput:router_* names, so the autoscaler and dashboards see demand that has
not been admitted to a replica yet."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily
from prometheus_client.utils import floatToGoString

from goodput.worker_image import contract

# queue waits: from a dispatch that found a free replica at once to the router's bounded maximum
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LOOP_PROBE_S = 0.01  # how often the event loop's lag is sampled
# the router's own overhead series (read by bench/router_overhead.py; the operator reads none of them)
ADDED_LATENCY = "goodput:router_added_latency_seconds"
LOOP_LAG = "goodput:router_loop_lag_seconds"
# the router's own time on a first byte's path (its overhead target is 1 ms at the median, 5 ms at p99), and the
# event loop's lag (a request that arrives while the loop is busy waits that long before its handler runs)
ADDED_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


@dataclass
class TierSeries:
    """One tier's children of the per-request series, looked up once: `labels()` takes a lock and a dict lookup
    per call, on every request's path."""

    tier: str
    metrics: RouterMetrics
    ttft: Histogram = field(init=False)
    added: Histogram = field(init=False)
    queue_wait: Histogram = field(init=False)
    _answers: dict[int, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ttft = self.metrics.ttft.labels(self.tier)
        self.added = self.metrics.added.labels(self.tier)
        self.queue_wait = self.metrics.queue_wait.labels(self.tier)

    def answered(self, status: int) -> None:
        counter = self._answers.get(status)
        if counter is None:
            counter = self._answers[status] = self.metrics.requests.labels(self.tier, str(status))
        counter.inc()


class QueueAges:
    """At each scrape, how long each request a tier's queue holds has waited so far, as a gauge histogram per tier
    (contract.ROUTER_QUEUE_AGE).

    The queue-wait and TTFT histograms count a request only once a replica takes it, so one starving behind
    shorter ones is invisible to them until then; this shows it while it waits.
    """

    def __init__(self) -> None:
        self._tiers: dict[str, Callable[[], Iterable[float]]] = {}

    def watch(self, tier: str, held_since: Callable[[], Iterable[float]]) -> None:
        """`held_since` gives the time.monotonic() at which each request the tier holds reached the router."""
        self._tiers[tier] = held_since

    def collect(self) -> Iterator[GaugeHistogramMetricFamily]:
        now = time.monotonic()
        family = GaugeHistogramMetricFamily(
            contract.ROUTER_QUEUE_AGE,
            "How long each request the router holds has waited so far.",
            labels=["tier"],
        )
        for tier, held_since in sorted(self._tiers.items()):
            ages = sorted(now - since for since in held_since())
            buckets = [(floatToGoString(le), float(bisect_right(ages, le))) for le in contract.TTFT_BUCKETS]
            family.add_metric([tier], [*buckets, ("+Inf", float(len(ages)))], gsum_value=sum(ages))
        yield family


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_ages = QueueAges()
        self.registry.register(self.queue_ages)
        gauge, counter = partial(Gauge, registry=self.registry), partial(Counter, registry=self.registry)
        self.queue_depth = gauge(
            contract.ROUTER_QUEUE_DEPTH, "Requests waiting in the router for a replica.", ["tier"]
        )
        self.queue_wait = Histogram(
            contract.ROUTER_QUEUE_WAIT, "Time requests waited in the router before a replica took them.",
            ["tier"], buckets=WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            contract.ROUTER_TTFT,
            "Time from a streamed request's arrival at the router to its first byte sent to the client.",
            ["tier"], buckets=contract.TTFT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.added = Histogram(
            ADDED_LATENCY,
            "The router's own time on a first byte's path: arrival to first byte sent, less the replica's time "
            "to its first byte and any queue wait.",
            ["tier"], buckets=ADDED_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.loop_lag = Histogram(
            LOOP_LAG,
            f"How late the event loop ran a callback due every {LOOP_PROBE_S:g} s (busy, or collecting garbage).",
            buckets=ADDED_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = gauge(
            contract.ROUTER_IN_FLIGHT, "Requests the router has sent to replicas and not finished.", ["tier"]
        )
        self.replicas = gauge(
            "goodput:router_replicas",
            "Replicas the router knows, by whether they are in rotation.",
            ["tier", "state"],
        )
        self.requests = counter(
            "goodput:router_requests", "Requests answered, by tier and HTTP status.", ["tier", "code"]
        )
        self.rejections = counter(
            "goodput:router_rejections", "Requests the router refused itself, by reason.", ["reason"]
        )
        self.prefix_hits = counter(
            "goodput:router_prefix_hit_blocks",
            "Prompt blocks routed to a replica estimated to hold them.",
            ["tier"],
        )
        self.prefix_blocks = counter("goodput:router_prefix_blocks", "Prompt blocks routed.", ["tier"])

    def tier(self, name: str) -> TierSeries:
        return TierSeries(name, self)


async def probe_loop(lag: Histogram) -> None:
    """Sample the event loop's lag forever: what no handler's own timing sees, as it starts after the lag."""
    while True:
        due = time.perf_counter() + LOOP_PROBE_S
        await asyncio.sleep(LOOP_PROBE_S)
        lag.observe(max(time.perf_counter() - due, 0.0))
