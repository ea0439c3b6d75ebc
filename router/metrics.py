"""The router's own metrics, under goodput:router_* names, so the autoscaler and dashboards see demand that has
not been admitted to a replica yet."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from goodput.worker_image import contract

# queue waits: from a dispatch that found a free replica at once to the router's bounded maximum
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge, counter = partial(Gauge, registry=self.registry), partial(Counter, registry=self.registry)
        self.queue_depth = gauge(
            contract.ROUTER_QUEUE_DEPTH, "Requests waiting in the router for a replica.", ["tier"]
        )
        self.queue_wait = Histogram(
            contract.ROUTER_QUEUE_WAIT, "Time requests waited in the router before a replica took them.",
            ["tier"], buckets=WAIT_BUCKETS, registry=self.registry,
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
