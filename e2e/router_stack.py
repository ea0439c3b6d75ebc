"""A routed InferenceService on the real node: the router pods, the workers per tier, and what each one counts.

Shared by the router's e2e tests (e2e/test_router.py) and the real-stack routing benchmark (bench/routing.py
--parts real_stack). The router needs what the real node gives: pods with their own addresses, listed in
EndpointSlices, and kube-proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes.client import AppsV1Api, CoreV1Api
from prometheus_client.parser import text_string_to_metric_families

from e2e import operator as goodput
from e2e import procs, service
from e2e.stack import Stack

LABEL_ROUTER = "goodput.dev/router"
LABEL_TIER = "goodput.dev/tier"
ROUTER_PORT = 8080


def with_router(manifest: dict[str, Any], stack: Stack, **router: Any) -> dict[str, Any]:
    """The manifest with `spec.router` set (the router runs from the operator image this stack loaded)."""
    manifest["spec"]["router"] = {"image": stack.images[goodput.OPERATOR_IMAGE], **router}
    return manifest


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    port: int
    container_id: str

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def pods(stack: Stack, namespace: str, selector: str) -> list[Pod]:
    """Running, Ready pods matching `selector`, by name."""
    with stack.api_client() as client:
        items = CoreV1Api(client).list_namespaced_pod(namespace, label_selector=selector).items
    found = []
    for pod in items:
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") != "True" or pod.metadata.deletion_timestamp:
            continue
        port = pod.spec.containers[0].ports[0].container_port
        found.append(
            Pod(pod.metadata.name, pod.status.pod_ip, port, pod.status.container_statuses[0].container_id)
        )
    return sorted(found, key=lambda p: p.name)


def routers(stack: Stack, namespace: str, name: str) -> list[Pod]:
    return pods(stack, namespace, f"{LABEL_ROUTER}={name}")


def workers(stack: Stack, namespace: str, name: str, tier: str) -> list[Pod]:
    return pods(stack, namespace, f"{service.LABEL_SERVICE}={name},{LABEL_TIER}={tier}")


def cluster_url(stack: Stack, namespace: str, name: str) -> str:
    """The Service's ClusterIP (kube-proxy picks a backend)."""
    with stack.api_client() as client:
        spec = CoreV1Api(client).read_namespaced_service(name, namespace).spec
    return f"http://{spec.cluster_ip}:{spec.ports[0].port}"


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples (those carrying `labels`) on one pod's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def total(pods_: list[Pod], name: str, **labels: str) -> float:
    return sum(metric(p.url, name, **labels) for p in pods_)


def wait_routed(
    stack: Stack, namespace: str, name: str, tiers: dict[str, int], timeout: float = 180.0
) -> None:
    """Until the router Deployment's pods are all Ready and each sees `tiers` (tier → replicas) in rotation."""

    def seen() -> bool:
        with stack.api_client() as client:
            deployment = AppsV1Api(client).read_namespaced_deployment(f"{name}-router", namespace)
        if (deployment.status.ready_replicas or 0) < deployment.spec.replicas:
            return False
        found = routers(stack, namespace, name)
        return len(found) == deployment.spec.replicas and all(
            metric(p.url, "goodput:router_replicas", tier=tier, state="up") == count
            for p in found
            for tier, count in tiers.items()
        )

    try:
        procs.wait_until(seen, timeout, f"{namespace}/{name}'s routers to see {tiers}", interval=1.0)
    except TimeoutError as error:
        pods_ = goodput.kubectl(stack, "get", "pods,endpointslices", "-n", namespace, "-o", "wide")
        raise TimeoutError(f"{error}\n{pods_}\n{router_state(stack, namespace, name)}") from None


def router_state(stack: Stack, namespace: str, name: str) -> str:
    """What each router pod counts of the tiers' replicas (for a failure's message)."""
    lines = []
    for pod in routers(stack, namespace, name):
        try:
            text = httpx.get(f"{pod.url}/metrics", timeout=5, trust_env=False).text
        except httpx.HTTPError as error:
            lines.append(f"{pod.name}: {error!r}")
            continue
        counts = [line for line in text.splitlines() if line.startswith("goodput:router_replicas")]
        lines.append(f"{pod.name}: {counts}")
    return "\n".join(lines)
