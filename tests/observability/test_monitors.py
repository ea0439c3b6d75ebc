"""The PodMonitors select the pods the operator builds and give their series the labels the rules join on."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import yaml

from goodput.controllers import naming

ROOT = Path(__file__).resolve().parents[2]


def sd_label(pod_label: str) -> str:
    """How Kubernetes service discovery names a pod label: every character outside [a-zA-Z0-9_] becomes '_'."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_worker_monitor_maps_the_operators_pod_labels(observability: ModuleType) -> None:
    workers, _, _ = observability.pod_monitors()
    assert workers["spec"]["selector"]["matchExpressions"][0]["key"] == naming.LABEL_SERVICE
    endpoint = workers["spec"]["podMetricsEndpoints"][0]
    mapping = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert mapping == {
        "inferenceservice": [sd_label(naming.LABEL_SERVICE)],
        "tier": [sd_label(naming.LABEL_TIER)],
    }
    assert endpoint["path"] == "/metrics"


def test_operator_monitor_keeps_the_per_service_labels(observability: ModuleType) -> None:
    _, operator, _ = observability.pod_monitors()
    assert operator["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


def test_operator_monitor_finds_the_operator_deployment(observability: ModuleType) -> None:
    deployment = yaml.safe_load((ROOT / "manifests" / "operator" / "deployment.yaml").read_text())
    _, operator, _ = observability.pod_monitors()
    template = deployment["spec"]["template"]
    selector = operator["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert deployment["metadata"]["namespace"] in operator["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert operator["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_router_monitor_finds_the_router_pods(observability: ModuleType) -> None:
    from goodput.controllers import builders, router_builders

    _, _, routers = observability.pod_monitors()
    (expression,) = routers["spec"]["selector"]["matchExpressions"]
    assert expression == {"key": router_builders.LABEL_ROUTER, "operator": "Exists"}
    assert expression["key"] in router_builders.router_labels("tiny")  # the router Deployment's pod labels
    (endpoint,) = routers["spec"]["podMetricsEndpoints"]
    assert endpoint["relabelings"] == [
        {"sourceLabels": [sd_label(router_builders.LABEL_ROUTER)], "targetLabel": "inferenceservice"}
    ]
    service = router_builders.build_router_service(builders.Owner("tiny", "ns", "u"))
    assert endpoint["port"] == service["spec"]["ports"][0]["targetPort"]  # the router container's port name
