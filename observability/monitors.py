"""PodMonitors: how a Prometheus Operator scrapes the workers and the operator, with the labels the rules expect."""

from __future__ import annotations

from typing import Any

from worker_image import contract as c


def pod_monitors() -> list[dict[str, Any]]:
    """Scrape configs for the Prometheus Operator: workers (pod labels to series labels), the operator, and the
    routers (their goodput:router_* series labelled with the service they front).

    The worker relabelling matches e2e/prometheus.py, so both stacks give the series the same labels. The
    operator's series name services in their own `namespace` label, hence honorLabels.
    """
    labels = {"app.kubernetes.io/name": "goodput", "app.kubernetes.io/component": "observability"}
    workers = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "goodput-workers", "labels": labels},
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchExpressions": [{"key": c.POD_LABEL_SERVICE, "operator": "Exists"}]},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": [f"__meta_kubernetes_pod_label_goodput_dev_{name}"],
                            "targetLabel": name,
                        }
                        for name in (c.SERVICE_LABEL, c.TIER_LABEL)
                    ],
                }
            ],
        },
    }
    operator = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "goodput-operator", "labels": labels},
        "spec": {
            "namespaceSelector": {"matchNames": ["goodput-system"]},  # manifests/operator/namespace.yaml
            "selector": {"matchLabels": {"app.kubernetes.io/name": "goodput-operator"}},
            "podMetricsEndpoints": [
                {"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True}
            ],
        },
    }
    routers = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "goodput-routers", "labels": labels},
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchExpressions": [{"key": "goodput.dev/router", "operator": "Exists"}]},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_goodput_dev_router"],
                            "targetLabel": c.SERVICE_LABEL,
                        }
                    ],
                }
            ],
        },
    }
    return [workers, operator, routers]
