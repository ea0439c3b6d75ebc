"""The real node: kubelet + containerd + runc + CNI + kube-proxy, pods from the images `make images` builds.

goodput is installed as users install it (its operator from its image, under its ServiceAccount); the tiny
example's worker runs from the worker image with exactly the pod spec the operator builds. Checks what only
a real node shows: containerd:// container IDs, pod IPs from the stack's range, `kubectl logs`, Prometheus
discovering the pods through kubernetes_sd and a request through the Service's ClusterIP (kube-proxy). The
session's conftest checks that the teardown leaves nothing on the host.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator

import httpx
import pytest
from kubernetes.client import CoreV1Api

from e2e import hostnet, procs, service
from e2e import operator as goodput
from e2e.stack import Stack

pytestmark = pytest.mark.e2e

POLICY = service.FastPolicy()
SLO = {"ttftP95Ms": 1500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}


@pytest.fixture(scope="module")
def tiny(cluster: Stack) -> Iterator[tuple[str, str]]:
    with goodput.installed(cluster, POLICY):
        namespace = f"tiny-{uuid.uuid4().hex[:6]}"
        with cluster.api_client() as client:
            CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
        service.apply(cluster, service.tiny_service(namespace, POLICY.name, SLO))
        service.wait_ready(cluster, namespace, "tiny", timeout=300)
        yield namespace, "tiny"
        with cluster.api_client() as client:
            CoreV1Api(client).delete_namespace(namespace)


def test_pods_run_in_containers_on_the_stack_range(cluster: Stack, tiny: tuple[str, str]) -> None:
    namespace, name = tiny
    pod_range = ipaddress.ip_network(hostnet.NodeNetwork(cluster.network or 0).pod_cidr)
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        node = core.read_node(cluster.nodes[0])
        pods = [
            *core.list_namespaced_pod(goodput.NAMESPACE).items,
            *core.list_namespaced_pod(namespace, label_selector=f"{service.LABEL_SERVICE}={name}").items,
        ]
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == cluster.version
    assert len(pods) >= 2
    for pod in pods:
        assert pod.status.phase == "Running", pod.metadata.name
        assert ipaddress.ip_address(pod.status.pod_ip) in pod_range, pod.status.pod_ip
        assert all(c.container_id.startswith("containerd://") for c in pod.status.container_statuses)
        image = pod.status.container_statuses[0].image
        assert image.startswith(("ghcr.io/goodput/operator", "ghcr.io/goodput/worker")), image
    wide = cluster.kubectl("get", "pods", "-A", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    assert all(pod.status.pod_ip in wide.stdout for pod in pods)


def test_worker_logs_scrapes_and_service_routing(cluster: Stack, tiny: tuple[str, str]) -> None:
    namespace, name = tiny
    _, svc = service.workers(cluster, namespace, name)
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        worker = core.list_namespaced_pod(namespace, label_selector=f"{service.LABEL_SERVICE}={name}").items[
            0
        ]
        cluster_ip = core.read_namespaced_service(svc, namespace).spec.cluster_ip
    logs = cluster.kubectl("logs", "-n", namespace, worker.metadata.name)
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    # kube-proxy routes the Service's ClusterIP (port 80) to the worker.
    answer = httpx.post(
        f"http://{cluster_ip}/v1/completions",
        json={"model": "tiny", "prompt": "hello", "max_tokens": 4},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 4

    def scraped() -> bool:
        query = f'up{{pod="{worker.metadata.name}"}}'
        result = httpx.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": query}).json()
        return any(r["value"][1] == "1" for r in result["data"]["result"])

    procs.wait_until(scraped, 60, "Prometheus to scrape the worker pod", interval=1.0)
