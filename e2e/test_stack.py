"""Smoke tests of the local stack itself: real API server and controllers, the node (kubelet, containerd,
kube-proxy), Prometheus. Pods run the Debian base image `make images` builds (python3 in it)."""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, VersionApi

from e2e import build, hostnet, images, procs
from e2e.stack import Stack, leftovers, running_stack

pytestmark = pytest.mark.e2e

SLEEPER = "import time; time.sleep(600)"


@pytest.fixture
def namespace(k8s: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    core = CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": name}})
    procs.wait_until(lambda: bool(core.read_namespaced_service_account("default", name)), 30, "default SA")
    yield name
    core.delete_namespace(name)


def pod_range(stack: Stack) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    assert stack.network is not None
    return ipaddress.ip_network(hostnet.NodeNetwork(stack.network).pod_cidr)


def python_container(stack: Stack, name: str, code: str, **extra: object) -> dict[str, Any]:
    """A container of the base image running ``python3 -c code``."""
    image = stack.images[images.BASE.name]
    command = ["python3", "-c", code]
    return {"name": name, "image": image, "imagePullPolicy": "Never", "command": command, **extra}


def web_deployment(stack: Stack, name: str) -> dict:
    """A Deployment whose pod serves a ConfigMap directory with `python3 -m http.server`."""
    labels = {"app": name, "goodput.dev/inferenceservice": name, "goodput.dev/tier": "interactive"}
    container = {
        "name": "web",
        "image": stack.images[images.BASE.name],
        "imagePullPolicy": "Never",
        "command": ["python3", "-m", "http.server", "8000", "--directory", "/srv/www"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "www", "mountPath": "/srv/www"}],
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics.txt",
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "www", "configMap": {"name": name}}],
                    "terminationGracePeriodSeconds": 5,
                },
            },
        },
    }


def test_version_reports_the_release(k8s: kubernetes.client.ApiClient, cluster: Stack) -> None:
    info = VersionApi(k8s).get_code()
    assert info.git_version == cluster.version == build.kube_version()
    assert (info.major, info.minor) == tuple(cluster.version.lstrip("v").split(".")[:2])
    client = cluster.kubectl("version", "--client", "-o", "json")
    assert client.returncode == 0 and f'"gitVersion": "{cluster.version}"' in client.stdout


def test_deployment_runs_is_scraped_and_is_garbage_collected(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    core, apps = CoreV1Api(k8s), AppsV1Api(k8s)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "web"}, "data": {"index.html": "ok", "metrics.txt": "smoke_up 1\n"}}
    )
    apps.create_namespaced_deployment(namespace, web_deployment(cluster, "web"))

    def ready_pod() -> kubernetes.client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready[0] if ready else None

    procs.wait_until(lambda: ready_pod() is not None, 60, "a Ready web pod")
    pod = ready_pod()
    assert pod is not None
    assert pod.status.phase == "Running" and pod.spec.node_name in cluster.nodes
    assert ipaddress.ip_address(pod.status.pod_ip) in pod_range(cluster)
    assert httpx.get(f"http://{pod.status.pod_ip}:8000/index.html").text == "ok"

    replica_sets = apps.list_namespaced_replica_set(namespace).items
    assert [rs.metadata.owner_references[0].name for rs in replica_sets] == ["web"]
    assert pod.metadata.owner_references[0].name == replica_sets[0].metadata.name

    query = f'smoke_up{{namespace="{namespace}",inferenceservice="web",tier="interactive"}}'

    def scraped() -> bool:
        result = httpx.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": query}).json()
        series = result["data"]["result"]
        return (
            len(series) == 1
            and series[0]["metric"]["pod"] == pod.metadata.name
            and series[0]["value"][1] == "1"
        )

    procs.wait_until(scraped, 30, f"Prometheus to scrape {query}")

    container_id = pod.status.container_statuses[0].container_id
    assert cluster.container_running(container_id)
    apps.delete_namespaced_deployment("web", namespace)
    procs.wait_until(lambda: not core.list_namespaced_pod(namespace).items, 60, "pods garbage-collected")
    assert not apps.list_namespaced_replica_set(namespace).items
    assert not cluster.container_running(container_id)


def test_service_account_kubeconfig_is_bound_by_rbac(
    k8s: kubernetes.client.ApiClient, cluster: Stack
) -> None:
    core, rbac = CoreV1Api(k8s), kubernetes.client.RbacAuthorizationV1Api(k8s)
    name = f"reader-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account("default", {"metadata": {"name": name}})
    kubeconfig = cluster.service_account_kubeconfig("default", name)
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
        as_sa = CoreV1Api(client)
        with pytest.raises(kubernetes.client.ApiException) as denied:
            as_sa.list_namespaced_config_map("default")
        assert denied.value.status == 403
        role = {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        }
        rbac.create_namespaced_role("default", role)
        subject = {"kind": "ServiceAccount", "name": name, "namespace": "default"}
        binding = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        }
        rbac.create_namespaced_role_binding("default", binding)
        procs.wait_until(lambda: as_sa.list_namespaced_config_map("default") is not None, 10, "RBAC grant")
        with pytest.raises(kubernetes.client.ApiException):
            as_sa.list_namespaced_secret("default")


def one_shot_pod(stack: Stack, name: str, code: str, restart: str, **extra: object) -> dict:
    container = python_container(stack, "main", code, **extra)
    return {"metadata": {"name": name}, "spec": {"restartPolicy": restart, "containers": [container]}}


def pod_phase(core: CoreV1Api, namespace: str, name: str) -> str:
    return core.read_namespaced_pod(name, namespace).status.phase


def test_env_and_restart_policy(k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str) -> None:
    core = CoreV1Api(k8s)
    check = (
        "import ipaddress, os, sys; e = os.environ; "
        f"sys.exit(0 if (e['NAME'], e['NS'], e['GREETING'], e['MSG']) == ('envcheck', '{namespace}', 'hi', 'hi!') "
        f"and ipaddress.ip_address(e['IP']) in ipaddress.ip_network('{pod_range(cluster)}') else 1)"
    )
    env = [
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "MSG", "value": "$(GREETING)!"},
    ]
    core.create_namespaced_pod(namespace, one_shot_pod(cluster, "envcheck", check, "Never", env=env))

    def config_error() -> bool:
        statuses = core.read_namespaced_pod("envcheck", namespace).status.container_statuses or []
        return bool(statuses) and statuses[0].state.waiting.reason == "CreateContainerConfigError"

    procs.wait_until(config_error, 30, "envcheck waiting for its ConfigMap")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"greeting": "hi"}})
    core.create_namespaced_pod(namespace, one_shot_pod(cluster, "fails", "raise SystemExit(3)", "Never"))
    crash = "print('boom', flush=True); raise SystemExit(3)"
    core.create_namespaced_pod(namespace, one_shot_pod(cluster, "crashloop", crash, "Always"))

    procs.wait_until(lambda: pod_phase(core, namespace, "envcheck") == "Succeeded", 60, "envcheck Succeeded")
    procs.wait_until(lambda: pod_phase(core, namespace, "fails") == "Failed", 30, "fails Failed")
    failed = core.read_namespaced_pod("fails", namespace).status.container_statuses[0]
    assert failed.state.terminated.exit_code == 3 and failed.restart_count == 0

    def restarted() -> bool:
        status = core.read_namespaced_pod("crashloop", namespace).status.container_statuses[0]
        return status.restart_count >= 2 and status.last_state.terminated.exit_code == 3

    procs.wait_until(restarted, 60, "crashloop restarted twice")
    assert pod_phase(core, namespace, "crashloop") == "Running"

    # `kubectl logs --previous`: what the last finished run printed, through the kubelet (retried: a restart
    # in between replaces the previous container, and the kubelet keeps only the newest dead one).
    def printed() -> bool:
        return cluster.kubectl("logs", "-n", namespace, "crashloop", "--previous").stdout.strip() == "boom"

    procs.wait_until(printed, 30, "the previous run's output through kubectl logs", interval=0.5)


def test_failing_liveness_probe_restarts_the_container(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    probe = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    pod = one_shot_pod(cluster, "unhealthy", SLEEPER, "Always", livenessProbe=probe)
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    core.create_namespaced_pod(namespace, pod)

    def restarted() -> bool:
        status = core.read_namespaced_pod("unhealthy", namespace).status.container_statuses
        return bool(status) and status[0].restart_count >= 1

    procs.wait_until(restarted, 60, "a liveness restart")
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=unhealthy").items
    assert any(e.reason == "Unhealthy" and "Liveness probe failed" in e.message for e in events)


def unschedulable_message(core: CoreV1Api, namespace: str, name: str) -> str:
    """The scheduler's reason a pod stays Pending ("" while it has not said)."""
    pod = core.read_namespaced_pod(name, namespace)
    scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
    if pod.spec.node_name is None and scheduled and scheduled[0].reason == "Unschedulable":
        return scheduled[0].message or ""
    return ""


@pytest.fixture
def gpu_node(k8s: kubernetes.client.ApiClient, cluster: Stack) -> Iterator[str]:
    """The node advertising two `nvidia.com/gpu` (an extended resource in its status capacity); taken back."""
    core = CoreV1Api(k8s)
    path = "/status/capacity/nvidia.com~1gpu"
    core.patch_node_status(cluster.nodes[0], [{"op": "add", "path": path, "value": "2"}])
    procs.wait_until(
        lambda: core.read_node(cluster.nodes[0]).status.allocatable.get("nvidia.com/gpu") == "2",
        30,
        "the node's allocatable nvidia.com/gpu",
    )
    yield cluster.nodes[0]
    core.patch_node_status(cluster.nodes[0], [{"op": "remove", "path": path}])


def test_gpu_requests_schedule_only_within_capacity(
    k8s: kubernetes.client.ApiClient, cluster: Stack, gpu_node: str, namespace: str
) -> None:
    core = CoreV1Api(k8s)

    def gpu_pod(name: str, gpus: int) -> dict:
        resources = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}
        pod = one_shot_pod(cluster, name, SLEEPER, "Always", resources=resources)
        pod["spec"]["terminationGracePeriodSeconds"] = 0
        return pod

    for name in ("gpu-a", "gpu-b", "gpu-c"):
        core.create_namespaced_pod(namespace, gpu_pod(name, 1))
    procs.wait_until(
        lambda: sum(pod_phase(core, namespace, n) == "Running" for n in ("gpu-a", "gpu-b", "gpu-c")) == 2,
        60,
        "two one-GPU pods Running",
    )
    (pending,) = [n for n in ("gpu-a", "gpu-b", "gpu-c") if pod_phase(core, namespace, n) == "Pending"]
    procs.wait_until(
        lambda: bool(unschedulable_message(core, namespace, pending)), 30, "the third Unschedulable"
    )
    assert "Insufficient nvidia.com/gpu" in unschedulable_message(core, namespace, pending)
    assert core.read_namespaced_pod(pending, namespace).spec.node_name is None


@pytest.fixture
def pool_node(k8s: kubernetes.client.ApiClient, cluster: Stack) -> Iterator[str]:
    """The node labelled as the `cpu` pool for one test; the label taken off after."""
    core = CoreV1Api(k8s)
    core.patch_node(cluster.nodes[0], {"metadata": {"labels": {"goodput.dev/pool": "cpu"}}})
    yield cluster.nodes[0]
    core.patch_node(cluster.nodes[0], {"metadata": {"labels": {"goodput.dev/pool": None}}})


def test_node_pools_place_pods_by_selector(
    k8s: kubernetes.client.ApiClient, cluster: Stack, pool_node: str, namespace: str
) -> None:
    """A pod selecting the node's pool runs there; one selecting a pool no node is in stays Pending, and says so."""
    core = CoreV1Api(k8s)
    for name, pool in (("on-cpu", "cpu"), ("on-h100", "h100")):
        pod = one_shot_pod(cluster, name, SLEEPER, "Always")
        pod["spec"] |= {"nodeSelector": {"goodput.dev/pool": pool}, "terminationGracePeriodSeconds": 0}
        core.create_namespaced_pod(namespace, pod)
    procs.wait_until(lambda: pod_phase(core, namespace, "on-cpu") == "Running", 60, "on-cpu Running")
    assert core.read_namespaced_pod("on-cpu", namespace).spec.node_name == pool_node
    procs.wait_until(
        lambda: bool(unschedulable_message(core, namespace, "on-h100")), 30, "on-h100 Unschedulable"
    )
    assert "didn't match Pod's node affinity/selector" in unschedulable_message(core, namespace, "on-h100")
    assert pod_phase(core, namespace, "on-h100") == "Pending"


def test_deletion_sends_sigterm_then_sigkill_after_grace(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    pod = one_shot_pod(cluster, "stubborn", stubborn, "Always")
    pod["spec"]["terminationGracePeriodSeconds"] = 3
    core.create_namespaced_pod(namespace, pod)
    procs.wait_until(lambda: pod_phase(core, namespace, "stubborn") == "Running", 60, "stubborn Running")
    status = core.read_namespaced_pod("stubborn", namespace).status.container_statuses[0]
    pid = cluster.container_pid(status.container_id)
    assert procs.alive(pid)
    began = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    procs.wait_until(lambda: not procs.alive(pid), 20, "the stubborn container's process gone")
    assert time.monotonic() - began >= 3 - 0.5  # it outlived SIGTERM until the grace period ran out
    procs.wait_until(lambda: not core.list_namespaced_pod(namespace).items, 20, "stubborn pod deleted")


DRAINING_SERVER = """
import http.server, signal, threading, time
draining = threading.Event()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if draining.is_set() else 200)
        self.end_headers()
server = http.server.ThreadingHTTPServer(("", 8000), Handler)
signal.signal(signal.SIGTERM, lambda *_: draining.set())
threading.Thread(target=server.serve_forever, daemon=True).start()
draining.wait()
time.sleep(5)
"""


def test_terminating_pod_drains_out_of_the_service_endpoints(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    pod = one_shot_pod(cluster, "drainer", DRAINING_SERVER, "Always", readinessProbe=probe)
    pod["metadata"]["labels"] = {"app": "drainer"}
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    core.create_namespaced_pod(namespace, pod)
    ports = [{"port": 80, "targetPort": "http"}]
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "drainer"}, "spec": {"selector": {"app": "drainer"}, "ports": ports}}
    )

    procs.wait_until(lambda: len(cluster.service_endpoints(namespace, "drainer")) == 1, 60, "one endpoint")
    endpoint = cluster.service_endpoints(namespace, "drainer")[0]
    cluster_ip = core.read_namespaced_service("drainer", namespace).spec.cluster_ip
    assert endpoint.endswith(":8000") and httpx.get(f"http://{endpoint}/").status_code == 200

    def routed() -> bool:  # through kube-proxy, once it has programmed the new Service
        return httpx.get(f"http://{cluster_ip}/", timeout=2).status_code == 200

    procs.wait_until(routed, 20, f"the ClusterIP {cluster_ip} routed to the pod", interval=0.5)
    core.delete_namespaced_pod("drainer", namespace)

    def draining() -> bool:
        pod = core.read_namespaced_pod("drainer", namespace)
        ready = next(c.status for c in pod.status.conditions if c.type == "Ready")
        return ready == "False" and httpx.get(f"http://{endpoint}/").status_code == 503

    procs.wait_until(draining, 10, "the terminating pod unready while it drains")
    assert cluster.service_endpoints(namespace, "drainer") == []
    procs.wait_until(
        lambda: not core.list_namespaced_pod(namespace).items, 30, "drainer deleted after its drain"
    )


@pytest.mark.own_node
def test_teardown_leaves_the_host_as_it_was() -> None:
    with running_stack(node_labels={"goodput.dev/pool": "cpu"}) as stack, stack.api_client() as client:
        core = CoreV1Api(client)
        assert core.read_node(stack.nodes[0]).metadata.labels["goodput.dev/pool"] == "cpu"
        core.create_namespaced_pod("default", one_shot_pod(stack, "sleeper", SLEEPER, "Always"))
        procs.wait_until(lambda: pod_phase(core, "default", "sleeper") == "Running", 60, "sleeper Running")
        status = core.read_namespaced_pod("sleeper", "default").status.container_statuses[0]
        pod_pid = stack.container_pid(status.container_id)
        assert procs.alive(pod_pid)
        control = {"etcd", "etcd-peer", "apiserver", "kcm", "prometheus"}
        node = {"kube-scheduler", "kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics"}
        assert set(stack.ports) == control | node
        assert all(stack.listening(port) for port in stack.ports.values())
        found = leftovers(stack)  # the check sees a running stack: its processes, ports, host changes
        assert {
            f"bridge {hostnet.NodeNetwork(stack.network or 0).bridge}",
            f"directory {stack.state_dir}",
        } <= set(found)
    assert leftovers(stack) == []
    assert not procs.alive(pod_pid)
