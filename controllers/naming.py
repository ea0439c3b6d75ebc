"""Names and labels of the objects the operator owns: one place, so builders, queries and tests agree."""

from __future__ import annotations

import hashlib

from goodput.worker_image.contract import POD_LABEL_SERVICE, POD_LABEL_TIER

FIELD_MANAGER = "goodput-operator"
COMPONENT = "goodput-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SERVICE = POD_LABEL_SERVICE
LABEL_TIER = POD_LABEL_TIER

WORKER_APP = "goodput-worker"
MANAGED_BY = "goodput"

ANNOTATION_CONFIG_HASH = "goodput.dev/engine-config-hash"
ANNOTATION_PLAN = "goodput.dev/plan"

WORKER_PORT = 8000
OPERATOR_PROBE_PORT = 8080
OPERATOR_METRICS_PORT = 9090


MAX_LABEL_VALUE = 63


def scrape_annotations(port: int) -> dict[str, str]:
    """The pod annotations Prometheus's pod discovery (e2e's, and the usual relabelling) scrapes by."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def fit(name: str, limit: int = MAX_LABEL_VALUE) -> str:
    """A DNS label of at most `limit` characters; long names keep a prefix and gain a stable hash."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def engine_config_name(service: str) -> str:
    return fit(f"{service}-engine")


def tier_name(service: str, tier: str) -> str:
    """Deployment and Service of one tier (a Service name is a DNS label: 63 characters at most)."""
    return fit(f"{service}-{tier}")


def pdb_name(service: str) -> str:
    return fit(f"{service}-workers")


def service_labels(service: str) -> dict[str, str]:
    """Labels every child of one InferenceService carries; `goodput.dev/inferenceservice` finds them."""
    return {
        LABEL_NAME: WORKER_APP,
        LABEL_INSTANCE: service,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: service,
    }


def tier_selector(service: str, tier: str) -> dict[str, str]:
    """The (immutable) selector of one tier's Deployment and Service."""
    return {LABEL_SERVICE: service, LABEL_TIER: tier}


def tier_labels(service: str, tier: str) -> dict[str, str]:
    return {**service_labels(service), LABEL_TIER: tier}
