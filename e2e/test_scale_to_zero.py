"""Scale to zero on the real node: a tiny service with minReplicas 0 behind its router goes to zero when idle,
and its first request after that, sent to the router's Service, wakes it and is served: no request fails.

The router finds the workers through their EndpointSlices (the node is real). A fast policy (2 s interval,
10 s idle period) keeps it short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api

from e2e import operator as goodput
from e2e import procs, service
from e2e.stack import Stack
from goodput.worker_image.contract import ROUTER_QUEUE_AGE

pytestmark = pytest.mark.e2e

POLICY = service.FastPolicy(name="e2e-zero", evaluation_interval_s=2.0, scale_to_zero_after_s=10.0)
SLO = {"ttftP95Ms": 1500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}
NAME = "tiny"
ROUTER_WAIT_S = 240.0  # the router holds the waking request this long: a pod's start and model load
REQUEST = {"model": NAME, "prompt": "hello", "max_tokens": 4}
GOODPUT = Path(sys.executable).with_name("goodput")  # the console script, as users run it


@pytest.fixture(scope="module")
def real(cluster: Stack) -> Stack:
    return cluster


@pytest.fixture(scope="module")
def sleepy(real: Stack) -> Iterator[str]:
    """The tiny example with minReplicas 0 and a router (running this checkout's image); its namespace."""
    with goodput.installed(real, POLICY):
        namespace = f"zero-{uuid.uuid4().hex[:6]}"
        with real.api_client() as client:
            CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
        manifest = service.tiny_service(namespace, POLICY.name, SLO, max_replicas=1)
        manifest["spec"]["scaling"]["minReplicas"] = 0
        image = real.images[goodput.OPERATOR_IMAGE]
        manifest["spec"]["router"] = {"image": image, "maxWaitSeconds": ROUTER_WAIT_S}
        service.apply(real, manifest)
        service.workers(real, namespace, NAME)  # created; it may reach zero before the router is up: no wait
        try:
            yield namespace
        finally:
            with real.api_client() as client:
                CoreV1Api(client).delete_namespace(namespace)


def router_url(stack: Stack, namespace: str) -> str:
    """The router's Service (named after the InferenceService) by its ClusterIP, which kube-proxy serves."""
    with stack.api_client() as client:
        return f"http://{CoreV1Api(client).read_namespaced_service(NAME, namespace).spec.cluster_ip}"


def replicas(stack: Stack, namespace: str, deployment: str) -> tuple[int, int]:
    """(desired, ready) of a Deployment."""
    with stack.api_client() as client:
        dep = AppsV1Api(client).read_namespaced_deployment(deployment, namespace)
    return dep.spec.replicas or 0, dep.status.ready_replicas or 0


def worker_pods(stack: Stack, namespace: str) -> int:
    with stack.api_client() as client:
        pods = CoreV1Api(client).list_namespaced_pod(
            namespace, label_selector=f"{service.LABEL_SERVICE}={NAME}"
        )
    return len(pods.items)


def held_in_prometheus(stack: Stack, namespace: str) -> float:
    """The most requests one router pod held at a scrape over the test, by its queue-age gauge histogram."""
    assert stack.prometheus_url is not None
    query = f'max(max_over_time({ROUTER_QUEUE_AGE}_gcount{{namespace="{namespace}"}}[15m]))'
    answer = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": query}, timeout=30).json()
    return max((float(r["value"][1]) for r in answer["data"]["result"]), default=0.0)


def test_idle_service_goes_to_zero_and_its_first_request_wakes_it_through_the_router(
    real: Stack, sleepy: str
) -> None:
    namespace, began = sleepy, time.monotonic()
    deployment, _ = service.workers(real, namespace, NAME)
    router = f"{NAME}-router"
    procs.wait_until(
        lambda: replicas(real, namespace, router)[1] >= 2, 180, "two router pods ready", interval=1
    )
    url = router_url(real, namespace)

    def answering() -> bool:  # kube-proxy programs the Service's endpoints a moment after the pods are ready
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    procs.wait_until(answering, 60, "the router's Service to answer", interval=0.5)
    answers: list[int] = []

    def complete() -> httpx.Response:
        answer = httpx.post(f"{url}/v1/completions", json=REQUEST, timeout=ROUTER_WAIT_S + 30)
        answers.append(answer.status_code)
        return answer

    # served through the router (by the hinted replica, or one it wakes if the service already went to zero)
    first = complete()
    assert first.status_code == 200, first.text
    served_at = time.monotonic()

    # idle: every tier to zero, said by the status, the printer column and `goodput status`
    procs.wait_until(lambda: replicas(real, namespace, deployment)[0] == 0, 120, "scaled to zero", interval=1)
    zero_after_s = time.monotonic() - served_at
    obj = service.get_service(real, namespace, NAME)
    assert service.condition(obj, "Ready")["reason"] == "ScaledToZero", obj["status"]["conditions"]
    assert "scaled to zero" in obj["status"]["lastDecision"]["reason"]
    listed = real.kubectl("get", "gpsvc", NAME, "-n", namespace)
    assert "ScaledToZero" in listed.stdout, listed.stdout + listed.stderr
    cli = subprocess.run(
        [str(GOODPUT), "status", "-n", namespace, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(real.kubeconfig)},
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)[0]["scaledToZero"] is True
    procs.wait_until(lambda: worker_pods(real, namespace) == 0, 120, "the worker pod gone", interval=1)

    # the first request at zero: held by the router while the operator starts a replica, then served
    sent = time.monotonic()
    woken = complete()
    wake_s = time.monotonic() - sent
    assert woken.status_code == 200, woken.text
    assert woken.json()["usage"]["completion_tokens"] == REQUEST["max_tokens"]
    assert replicas(real, namespace, deployment)[0] == 1
    with real.api_client() as client:
        events = [e.message for e in CoreV1Api(client).list_namespaced_event(namespace).items]
    assert any("woke from zero" in (message or "") for message in events), events
    assert answers == [200, 200]  # no failed request
    # the scrape that showed the operator the held request showed its wait too, in the router's queue-age series
    assert held_in_prometheus(real, namespace) >= 1
    print(
        f"scale to zero: zero {zero_after_s:.0f} s after the last request (idle period "
        f"{POLICY.scale_to_zero_after_s:g} s, window 10 s); first request after waking served in {wake_s:.0f} s; "
        f"test {time.monotonic() - began:.0f} s"
    )
