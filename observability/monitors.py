"""PodMonitors: how a Prometheus Operator scrapes workers, operator and routers, with the labels the rules expect."""

from __future__ import annotations

from typing import Any

from goodput.worker_image import contract as c

LABELS = {"app.kubernetes.io/name": "goodput", "app.kubernetes.io/component": "observability"}


def _pod_monitor(
    name: str, namespaces: dict[str, Any], selector: dict[str, Any], endpoint: dict[str, Any]
) -> dict[str, Any]:
    """One PodMonitor: which pods, in which namespaces, scraped how."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {"namespaceSelector": namespaces, "selector": selector, "podMetricsEndpoints": [endpoint]},
    }


def _labelled(pod_label: str, series_labels: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pods that carry `pod_label`, scraped on their http port with each pod label copied to a series label."""
    selector = {"matchExpressions": [{"key": pod_label, "operator": "Exists"}]}
    relabelings = [
        {"sourceLabels": [f"__meta_kubernetes_pod_label_{source}"], "targetLabel": target}
        for source, target in series_labels.items()
    ]
    # three scrapes within the operator's 15 s window (GOODPUT_OPERATOR_WINDOW_S), so increase() has samples
    endpoint = {"port": "http", "path": "/metrics", "interval": "5s", "relabelings": relabelings}
    return selector, endpoint


def pod_monitors() -> list[dict[str, Any]]:
    """Scrape configs for the Prometheus Operator: workers (pod labels to series labels), the operator, and the
    routers (their goodput:router_* series labelled with the service they front).

    The worker relabelling matches e2e/prometheus.py, so both stacks give the series the same labels. The
    operator's series name services in their own `namespace` label, hence honorLabels.
    """
    every = {"any": True}
    worker_labels = {f"goodput_dev_{name}": name for name in (c.SERVICE_LABEL, c.TIER_LABEL)}
    return [
        _pod_monitor("goodput-workers", every, *_labelled(c.POD_LABEL_SERVICE, worker_labels)),
        _pod_monitor(
            "goodput-operator",
            {"matchNames": ["goodput-system"]},  # manifests/operator/namespace.yaml
            {"matchLabels": {"app.kubernetes.io/name": "goodput-operator"}},
            {"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True},
        ),
        _pod_monitor(
            "goodput-routers",
            every,
            *_labelled(c.POD_LABEL_ROUTER, {"goodput_dev_router": c.SERVICE_LABEL}),
        ),
    ]
