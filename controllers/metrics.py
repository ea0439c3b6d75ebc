"""The operator's own /metrics: what it decided, what failed, how long a control interval took."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.policies.types import Candidate
from goodput.worker_image import contract as c

REGISTRY = CollectorRegistry()

DECISIONS = Counter(
    c.OPERATOR_DECISIONS,
    "Autoscaling decisions that changed something, by action (scale, retune, rollout) and mode.",
    ["action", "mode"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    c.OPERATOR_RECONCILE_ERRORS,
    "Failed reconciles and failed actuations, by stage.",
    ["stage"],
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    c.OPERATOR_POLL_DURATION,
    "Wall time of one control interval for all services: queries, decisions, writes.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
LAST_POLL_DURATION = Gauge(
    "goodput_operator_last_poll_duration_seconds",
    "Wall time of the latest control interval.",
    registry=REGISTRY,
)
LAST_READ_DURATION = Gauge(
    "goodput_operator_last_prometheus_read_seconds",
    "Wall time of the latest interval's Prometheus queries (part of the interval).",
    registry=REGISTRY,
)
INTERVALS = Counter("goodput_operator_intervals", "Control intervals run.", registry=REGISTRY)
POLICY_CPU = Counter(
    "goodput_operator_policy_cpu_seconds",
    "CPU time spent inside policies (planner, autoscaler).",
    registry=REGISTRY,
)
PROMETHEUS_QUERIES = Counter(
    "goodput_operator_prometheus_queries",
    "PromQL queries sent (a fixed number per interval, whatever the number of services).",
    registry=REGISTRY,
)
PROMETHEUS_UP = Gauge(
    c.OPERATOR_PROMETHEUS_UP, "1 when the last interval's queries succeeded.", registry=REGISTRY
)
SERVICES = Gauge(c.OPERATOR_SERVICES, "InferenceServices this operator manages.", registry=REGISTRY)
SLO_TARGETS = {
    key: Gauge(
        c.slo_target_gauge(key),
        f"Each service's {key.upper()} target from its spec, for dashboards and SLO burn-rate rules.",
        [c.NAMESPACE_LABEL, c.SERVICE_LABEL, c.PERCENTILE_LABEL],
        registry=REGISTRY,
    )
    for key in c.SLO_KEYS
}
PLAN_REPLICAS = Gauge(
    c.PLAN_REPLICAS,
    "Replicas the current plan gives each tier (what runs in mode auto, the recommendation otherwise).",
    [c.NAMESPACE_LABEL, c.SERVICE_LABEL, c.TIER_LABEL],
    registry=REGISTRY,
)


class ExportedService(Protocol):
    """What the per-service gauges read of a managed service (controllers.runtime.ServiceRecord has it)."""

    namespace: str
    name: str
    spec: InferenceServiceSpec
    plan: Candidate | None


def export_services(services: Iterable[ExportedService]) -> None:
    """Set the per-service gauges from the managed services; series of services or tiers now gone go too."""
    wanted: dict[Gauge, dict[tuple[str, ...], float]] = {
        g: {} for g in (*SLO_TARGETS.values(), PLAN_REPLICAS)
    }
    for record in services:
        slo = record.spec.slo
        targets = {
            ("ttft", "95"): slo.ttft_p95_ms,
            ("ttft", "99"): slo.ttft_p99_ms,
            ("tpot", "95"): slo.tpot_p95_ms,
            ("tpot", "99"): slo.tpot_p99_ms,
        }
        for (key, percentile), ms in targets.items():
            if ms is not None:
                wanted[SLO_TARGETS[key]][(record.namespace, record.name, percentile)] = ms / 1000.0
        for tier in record.plan.tiers if record.plan is not None else ():
            wanted[PLAN_REPLICAS][(record.namespace, record.name, str(tier.tier))] = tier.replicas
    for gauge, values in wanted.items():
        for labels in {tuple(s.labels.values()) for m in gauge.collect() for s in m.samples} - set(values):
            gauge.remove(*labels)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)


def serve(port: int, address: str = "0.0.0.0") -> tuple[object, object]:
    """Start the /metrics endpoint on a thread; returns (server, thread) so shutdown can stop it."""
    return start_http_server(port, addr=address, registry=REGISTRY)
