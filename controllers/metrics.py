"""The operator's own /metrics: what it decided, what failed, how long a control interval took."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

DECISIONS = Counter(
    "goodput_operator_decisions",
    "Autoscaling decisions that changed something, by action (scale, retune, rollout) and mode.",
    ["action", "mode"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "goodput_operator_reconcile_errors",
    "Failed reconciles and failed actuations, by stage.",
    ["stage"],
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "goodput_operator_poll_duration_seconds",
    "Wall time of one control interval for all services: queries, decisions, writes.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
LAST_POLL_DURATION = Gauge(
    "goodput_operator_last_poll_duration_seconds",
    "Wall time of the latest control interval.",
    registry=REGISTRY,
)
INTERVALS = Counter("goodput_operator_intervals", "Control intervals run.", registry=REGISTRY)
POLICY_CPU = Counter(
    "goodput_operator_policy_cpu_seconds",
    "CPU time spent inside policies (planner, autoscaler), in worker threads.",
    registry=REGISTRY,
)
PROMETHEUS_QUERIES = Counter(
    "goodput_operator_prometheus_queries",
    "PromQL queries sent (a fixed number per interval, whatever the number of services).",
    registry=REGISTRY,
)
PROMETHEUS_UP = Gauge(
    "goodput_operator_prometheus_up", "1 when the last interval's queries succeeded.", registry=REGISTRY
)
SERVICES = Gauge("goodput_operator_services", "InferenceServices this operator manages.", registry=REGISTRY)


def serve(port: int, address: str = "0.0.0.0") -> tuple[object, object]:
    """Start the /metrics endpoint on a thread; returns (server, thread) so shutdown can stop it."""
    return start_http_server(port, addr=address, registry=REGISTRY)
