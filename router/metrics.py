"""The router's own metrics, under goodput:router_* names, so the autoscaler and dashboards see demand that has
not been admitted to a replica yet."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# queue waits: from a dispatch that found a free replica at once to the router's bounded maximum
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "goodput:router_queue_depth", "Requests waiting in the router for a replica.", ["tier"],
            registry=self.registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "goodput:router_queue_wait_seconds", "Time requests waited in the router before a replica took them.",
            ["tier"], buckets=WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "goodput:router_in_flight", "Requests the router has sent to replicas and not finished.", ["tier"],
            registry=self.registry,
        )  # fmt: skip
        self.replicas = Gauge(
            "goodput:router_replicas", "Replicas the router knows, by whether they are in rotation.",
            ["tier", "state"], registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "goodput:router_requests", "Requests answered, by tier and HTTP status.", ["tier", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.rejections = Counter(
            "goodput:router_rejections", "Requests the router refused itself, by reason.", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.prefix_hits = Counter(
            "goodput:router_prefix_hit_blocks", "Prompt blocks routed to a replica estimated to hold them.",
            ["tier"], registry=self.registry,
        )  # fmt: skip
        self.prefix_blocks = Counter(
            "goodput:router_prefix_blocks", "Prompt blocks routed.", ["tier"], registry=self.registry,
        )  # fmt: skip
