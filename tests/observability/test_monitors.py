"""The PodMonitors select the pods the operator builds and give their series the labels the rules join on."""

from __future__ import annotations

import re
from types import ModuleType

from controllers import naming


def sd_label(pod_label: str) -> str:
    """How Kubernetes service discovery names a pod label: every character outside [a-zA-Z0-9_] becomes '_'."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_worker_monitor_maps_the_operators_pod_labels(observability: ModuleType) -> None:
    workers, _ = observability.pod_monitors()
    assert workers["spec"]["selector"]["matchExpressions"][0]["key"] == naming.LABEL_SERVICE
    endpoint = workers["spec"]["podMetricsEndpoints"][0]
    mapping = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert mapping == {
        "inferenceservice": [sd_label(naming.LABEL_SERVICE)],
        "tier": [sd_label(naming.LABEL_TIER)],
    }
    assert endpoint["path"] == "/metrics"


def test_operator_monitor_keeps_the_per_service_labels(observability: ModuleType) -> None:
    _, operator = observability.pod_monitors()
    assert operator["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
