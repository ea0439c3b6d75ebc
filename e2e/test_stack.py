"""Smoke tests of the local stack itself: real API server and controllers, process kubelet, Prometheus."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator

import httpx
import kubernetes
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, VersionApi

from e2e import build, procs
from e2e.stack import NodeSpec, Stack, leftovers, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def namespace(k8s: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    core = CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": name}})
    procs.wait_until(lambda: bool(core.read_namespaced_service_account("default", name)), 30, "default SA")
    yield name
    core.delete_namespace(name)


def pid_of(pod: kubernetes.client.V1Pod) -> int:
    return int(pod.status.container_statuses[0].container_id.removeprefix("process://"))


def web_deployment(name: str) -> dict:
    """A Deployment whose pod serves a ConfigMap directory with `python -m http.server` on its pod IP."""
    labels = {"app": name, "goodput.dev/inferenceservice": name, "goodput.dev/tier": "interactive"}
    container = {
        "name": "web",
        "image": "python:3.11",
        "command": ["python", "-m", "http.server", "8000", "--bind", "$(POD_IP)", "--directory", "/srv/www"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
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
    apps.create_namespaced_deployment(namespace, web_deployment("web"))

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
    ip = ipaddress.ip_address(pod.status.pod_ip)
    assert ip.is_loopback and ip != ipaddress.ip_address("127.0.0.1")
    assert httpx.get(f"http://{ip}:8000/index.html").text == "ok"

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

    pid = pid_of(pod)
    apps.delete_namespaced_deployment("web", namespace)
    procs.wait_until(lambda: not core.list_namespaced_pod(namespace).items, 60, "pods garbage-collected")
    assert not apps.list_namespaced_replica_set(namespace).items
    assert not procs.alive(pid)


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


def one_shot_pod(name: str, code: str, restart: str, **extra: object) -> dict:
    container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", code], **extra}
    return {"metadata": {"name": name}, "spec": {"restartPolicy": restart, "containers": [container]}}


def pod_phase(core: CoreV1Api, namespace: str, name: str) -> str:
    return core.read_namespaced_pod(name, namespace).status.phase


def test_env_and_restart_policy(k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str) -> None:
    core = CoreV1Api(k8s)
    check = (
        "import os, sys; e = os.environ; "
        f"sys.exit(0 if (e['NAME'], e['NS'], e['GREETING'], e['MSG']) == ('envcheck', '{namespace}', 'hi', 'hi!') "
        "and e['IP'].startswith('127.') and e['IP'] != '127.0.0.1' else 1)"
    )
    env = [
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "MSG", "value": "$(GREETING)!"},
    ]
    core.create_namespaced_pod(namespace, one_shot_pod("envcheck", check, "Never", env=env))

    def config_error() -> bool:
        statuses = core.read_namespaced_pod("envcheck", namespace).status.container_statuses or []
        return bool(statuses) and statuses[0].state.waiting.reason == "CreateContainerConfigError"

    procs.wait_until(config_error, 30, "envcheck waiting for its ConfigMap")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"greeting": "hi"}})
    core.create_namespaced_pod(namespace, one_shot_pod("fails", "raise SystemExit(3)", "Never"))
    core.create_namespaced_pod(
        namespace, one_shot_pod("crashloop", "print('boom'); raise SystemExit(3)", "Always")
    )

    procs.wait_until(lambda: pod_phase(core, namespace, "envcheck") == "Succeeded", 30, "envcheck Succeeded")
    procs.wait_until(lambda: pod_phase(core, namespace, "fails") == "Failed", 30, "fails Failed")
    failed = core.read_namespaced_pod("fails", namespace).status.container_statuses[0]
    assert failed.state.terminated.exit_code == 3 and failed.restart_count == 0

    def restarted() -> bool:
        status = core.read_namespaced_pod("crashloop", namespace).status.container_statuses[0]
        return status.restart_count >= 2 and status.last_state.terminated.exit_code == 3

    procs.wait_until(restarted, 30, "crashloop restarted twice")
    assert pod_phase(core, namespace, "crashloop") == "Running"
    # Two finished runs printed; the third may not have yet.
    assert cluster.pod_logs(namespace, "crashloop").count("boom") >= 2


def test_failing_liveness_probe_restarts_the_container(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    probe = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    pod = one_shot_pod("unhealthy", "import time; time.sleep(600)", "Always", livenessProbe=probe)
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    core.create_namespaced_pod(namespace, pod)

    def restarted() -> bool:
        status = core.read_namespaced_pod("unhealthy", namespace).status.container_statuses
        return bool(status) and status[0].restart_count >= 1

    procs.wait_until(restarted, 30, "a liveness restart")


def test_gpu_requests_schedule_only_within_allocatable(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    sleeper = "import time; time.sleep(600)"

    def gpu_pod(name: str, gpus: int) -> dict:
        resources = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}
        return one_shot_pod(name, sleeper, "Always", resources=resources)

    core.create_namespaced_pod(namespace, gpu_pod("one-gpu", 1))
    core.create_namespaced_pod(namespace, gpu_pod("too-many", 1000))
    procs.wait_until(lambda: pod_phase(core, namespace, "one-gpu") == "Running", 30, "one-gpu Running")
    pending = core.read_namespaced_pod("too-many", namespace)
    assert pending.spec.node_name is None and pending.status.phase == "Pending"

    def unschedulable() -> bool:
        conditions = core.read_namespaced_pod("too-many", namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    procs.wait_until(unschedulable, 10, "too-many marked Unschedulable")


def test_deletion_sends_sigterm_then_sigkill_after_grace(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    pod = one_shot_pod("stubborn", stubborn, "Always")
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    core.create_namespaced_pod(namespace, pod)
    procs.wait_until(lambda: pod_phase(core, namespace, "stubborn") == "Running", 30, "stubborn Running")
    pid = pid_of(core.read_namespaced_pod("stubborn", namespace))
    core.delete_namespaced_pod("stubborn", namespace)
    procs.wait_until(lambda: not core.list_namespaced_pod(namespace).items, 20, "stubborn pod deleted")
    assert not procs.alive(pid)


DRAINING_SERVER = """
import http.server, os, signal, threading, time
draining = threading.Event()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if draining.is_set() else 200)
        self.end_headers()
server = http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8000), Handler)
signal.signal(signal.SIGTERM, lambda *_: draining.set())
threading.Thread(target=server.serve_forever, daemon=True).start()
draining.wait()
time.sleep(3)
"""


def test_terminating_pod_drains_out_of_service_backends(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    core = CoreV1Api(k8s)
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    pod = one_shot_pod("drainer", DRAINING_SERVER, "Always", env=env, readinessProbe=probe)
    pod["metadata"]["labels"] = {"app": "drainer"}
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    core.create_namespaced_pod(namespace, pod)
    ports = [{"port": 80, "targetPort": "http"}]
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "drainer"}, "spec": {"selector": {"app": "drainer"}, "ports": ports}}
    )

    procs.wait_until(lambda: len(cluster.service_backends(namespace, "drainer")) == 1, 30, "one backend")
    backend = cluster.service_backends(namespace, "drainer")[0]
    assert backend.endswith(":8000") and httpx.get(f"http://{backend}/").status_code == 200
    core.delete_namespaced_pod("drainer", namespace)

    def draining() -> bool:
        pod = core.read_namespaced_pod("drainer", namespace)
        ready = next(c.status for c in pod.status.conditions if c.type == "Ready")
        return ready == "False" and httpx.get(f"http://{backend}/").status_code == 503

    procs.wait_until(draining, 10, "the terminating pod unready while it drains")
    assert cluster.service_backends(namespace, "drainer") == []
    procs.wait_until(
        lambda: not core.list_namespaced_pod(namespace).items, 20, "drainer deleted after its drain"
    )


def test_node_pools_place_pods_by_selector_and_gpu_capacity() -> None:
    pools = [
        NodeSpec("cpu-node", {"goodput.dev/pool": "cpu"}, gpus="0"),
        NodeSpec("h100-node", {"goodput.dev/pool": "h100"}, gpus="2"),
    ]
    sleeper = "import time; time.sleep(600)"
    with running_stack(nodes=pools, with_prometheus=False) as stack, stack.api_client() as client:
        core = CoreV1Api(client)
        gpu = {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
        for name, pool, resources in [("a", "h100", gpu), ("b", "h100", gpu), ("c", "cpu", {})]:
            pod = one_shot_pod(name, sleeper, "Always", resources=resources)
            pod["spec"]["nodeSelector"] = {"goodput.dev/pool": pool}
            core.create_namespaced_pod("default", pod)
        procs.wait_until(
            lambda: all(pod_phase(core, "default", n) == "Running" for n in "abc"), 30, "pods Running"
        )
        nodes = {n: core.read_namespaced_pod(n, "default").spec.node_name for n in "abc"}
        assert nodes == {"a": "h100-node", "b": "h100-node", "c": "cpu-node"}
        core.create_namespaced_pod("default", one_shot_pod("d", sleeper, "Always", resources=gpu))

        def unschedulable() -> bool:
            conditions = core.read_namespaced_pod("d", "default").status.conditions or []
            return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

        procs.wait_until(unschedulable, 10, "d marked Unschedulable: no node has a free GPU")
        assert core.read_namespaced_pod("d", "default").spec.node_name is None


def test_teardown_leaves_no_process_port_or_directory() -> None:
    with running_stack() as stack:
        core = CoreV1Api(stack.api_client())
        core.create_namespaced_pod(
            "default", one_shot_pod("sleeper", "import time; time.sleep(600)", "Always")
        )
        procs.wait_until(lambda: pod_phase(core, "default", "sleeper") == "Running", 30, "sleeper Running")
        pod_pid = pid_of(core.read_namespaced_pod("sleeper", "default"))
        assert pod_pid in procs.processes_mentioning(str(stack.state_dir))
        assert set(stack.ports) == {"etcd", "etcd-peer", "apiserver", "kcm", "prometheus"}
        assert all(procs.listening(port) for port in stack.ports.values())
        assert len(leftovers(stack)) > len(stack.ports)  # the check sees a running stack
    assert leftovers(stack) == []
    assert not procs.alive(pod_pid)
