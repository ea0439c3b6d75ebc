"""Faults on the real stack with the operator installed from manifests/ (its own ServiceAccount, shipped RBAC).

A stack of its own (the faults stop and restart Prometheus, the API server and pods): marked ``own_node``, so
the module runs before the session's stack starts (one node per host). Impossible specs get a condition and no children; fuzzed specs the API server accepts are
reconciled without crashing the operator; Prometheus down holds replicas, and scaling resumes when it is
back; a worker killed mid-stream fails only its own clients and is restarted; the operator killed right after
creating children, or the API server restarted under it, converges with no duplicate children.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from e2e import loadgen, procs, service
from e2e import operator as goodput
from e2e.stack import Stack, leftovers, running_stack
from e2e.test_reliability_input import apply as mutate
from e2e.test_reliability_input import mutation
from goodput.crds.validation import validate_manifest
from testkit.specs import LLAMA_405B_ARCHITECTURE

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.own_node]

POLICY = service.FastPolicy(name="faults", scale_down_stabilization_s=20.0)
SLO = {"ttftP95Ms": 1500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}
# Long requests and a cold-start hint that plans two tiny CPU replicas (`goodput plan` says so).
TWO_REPLICA_HINTS = {
    "class": "interactive",
    "expectedRps": 60,
    "promptTokens": {"p50": 500, "p95": 1000},
    "outputTokens": {"p50": 200, "p95": 400},
}
STREAM_TOKENS = 2000  # seconds of streaming on a tiny CPU worker (one torch thread); fits its context
RECONCILED: list[
    str
] = []  # per fuzzed spec the operator reconciled: its Ready reason, for bench/reliability.py


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as own:
        yield own
    assert leftovers(own) == []


@pytest.fixture(scope="module")
def installed(stack: Stack) -> Iterator[None]:
    with goodput.installed(stack, POLICY):
        yield


@pytest.fixture
def namespace(stack: Stack, installed: None) -> Iterator[str]:
    name = f"faults-{uuid.uuid4().hex[:6]}"
    with stack.api_client() as client:
        CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    yield name
    with stack.api_client() as client:
        CoreV1Api(client).delete_namespace(name)


def children(stack: Stack, namespace: str) -> dict[str, list[str]]:
    """Every object in the namespace the operator could have made, by kind (system ConfigMaps left out)."""
    with stack.api_client() as client:
        core, apps = CoreV1Api(client), AppsV1Api(client)
        policy = kubernetes.client.PolicyV1Api(client)
        found = {
            "deployments": apps.list_namespaced_deployment(namespace).items,
            "replicasets": apps.list_namespaced_replica_set(namespace).items,
            "services": core.list_namespaced_service(namespace).items,
            "configmaps": [
                c
                for c in core.list_namespaced_config_map(namespace).items
                if c.metadata.name != "kube-root-ca.crt"
            ],
            "pdbs": policy.list_namespaced_pod_disruption_budget(namespace).items,
        }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items()}


def wait_condition(
    stack: Stack, namespace: str, name: str, kind: str, status: str, timeout: float = 60, reason: str = ""
) -> dict:
    def seen() -> bool:
        found = service.condition(service.get_service(stack, namespace, name), kind)
        return found.get("status") == status and found.get("reason", "") == (
            reason or found.get("reason", "")
        )

    procs.wait_until(seen, timeout, f"{namespace}/{name} {kind}={status}", interval=0.5)
    return service.condition(service.get_service(stack, namespace, name), kind)


def operator_pod(stack: Stack) -> kubernetes.client.V1Pod:
    with stack.api_client() as client:
        selector = f"app.kubernetes.io/name={goodput.NAME}"
        pods = CoreV1Api(client).list_namespaced_pod(goodput.NAMESPACE, label_selector=selector).items
    (pod,) = [p for p in pods if not p.metadata.deletion_timestamp]
    return pod


def container_pid(stack: Stack, pod: kubernetes.client.V1Pod) -> int:
    """The host PID of the pod's (first) container, on either node."""
    return stack.container_pid(pod.status.container_statuses[0].container_id)


def restarts(pod: kubernetes.client.V1Pod) -> int:
    return pod.status.container_statuses[0].restart_count


def huge_model(namespace: str) -> dict[str, Any]:
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    manifest["metadata"]["name"] = "huge"
    manifest["spec"]["model"] = {
        "name": "huge",
        "source": "/models/huge",
        "dtype": "bfloat16",
        "architecture": dict(LLAMA_405B_ARCHITECTURE),
    }
    manifest["spec"]["accelerators"] = [{"type": "L4", "maxCount": 8}]
    manifest["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2, "maxTensorParallel": 1}
    return manifest


def over_budget(namespace: str) -> dict[str, Any]:
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    manifest["metadata"]["name"] = "crowded"
    manifest["spec"]["traffic"] = {**TWO_REPLICA_HINTS, "expectedRps": 400}
    return manifest


def test_impossible_specs_get_a_condition_and_no_children(
    stack: Stack, namespace: str, record_property: Any
) -> None:
    service.apply(stack, huge_model(namespace))
    service.apply(stack, over_budget(namespace))
    invalid = wait_condition(stack, namespace, "huge", "InvalidSpec", "True")
    assert invalid["reason"] == "ModelDoesNotFit" and "memory" in invalid["message"], invalid
    limited = wait_condition(stack, namespace, "crowded", "CapacityLimited", "True")
    assert "maxCount" in limited["message"] or "max_count" in limited["message"], limited
    for name in ("huge", "crowded"):
        assert service.condition(service.get_service(stack, namespace, name), "Ready")["status"] == "False"
    time.sleep(3)  # a few operator intervals: still nothing half-built
    assert children(stack, namespace) == {k: [] for k in children(stack, namespace)}
    record_property(
        "operator_bad_input", {"specs": 2, "flagged": [invalid["reason"], limited["reason"]], "children": 0}
    )


FUZZ = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    database=None,
    phases=[Phase.generate],  # no shrinking: each example waits on the operator
)


@FUZZ
@given(mutations=st.lists(mutation("InferenceService"), min_size=1, max_size=3))
def test_accepted_fuzzed_specs_are_reconciled_without_an_operator_crash(
    stack: Stack, installed: None, mutations: list
) -> None:
    """Specs our validator (and so the API server, see test_reliability_input) accepts, in mode recommend (no
    workers): each is planned or flagged, its generation observed, the operator's container never restarted."""
    namespace = "default"
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    for op, path, value in mutations:
        mutate(manifest, op, path, value)
    manifest["metadata"] = {"name": f"fz-{uuid.uuid4().hex[:8]}", "namespace": namespace}
    assume(isinstance(manifest.get("spec"), dict))
    manifest["spec"]["mode"] = "recommend"
    assume(not validate_manifest(manifest))
    before = restarts(operator_pod(stack))
    with stack.api_client() as client:
        custom = CustomObjectsApi(client)
        path = (service.GROUP, service.VERSION, namespace, service.PLURAL)
        created = custom.create_namespaced_custom_object(*path, manifest)
        name, generation = created["metadata"]["name"], created["metadata"]["generation"]
        verdict: dict[str, str] = {}

        def reconciled() -> bool:
            status = custom.get_namespaced_custom_object(*path, name).get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            if status.get("observedGeneration") != generation or "Ready" not in conditions:
                return False
            verdict["reason"] = conditions["Ready"]["reason"]
            return True

        try:
            procs.wait_until(reconciled, 60, f"{name} reconciled", interval=0.5)
        except TimeoutError:
            stored = custom.get_namespaced_custom_object(*path, name)
            pytest.fail(f"not reconciled in 60 s: {json.dumps(stored)}")
        finally:
            custom.delete_namespaced_custom_object(*path, name)
    assert restarts(operator_pod(stack)) == before
    RECONCILED.append(verdict["reason"])


def two_replica_service(stack: Stack, namespace: str, min_replicas: int = 1) -> tuple[str, str]:
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    manifest["spec"]["traffic"] = TWO_REPLICA_HINTS
    manifest["spec"]["scaling"]["minReplicas"] = min_replicas
    service.apply(stack, manifest)
    deployment, svc = service.workers(stack, namespace, "tiny")
    with stack.api_client() as client:
        replicas = AppsV1Api(client).read_namespaced_deployment(deployment, namespace).spec.replicas
    assert replicas == 2, f"the hints planned {replicas} replicas, not 2"
    return deployment, svc


def replicas_of(stack: Stack, namespace: str, deployment: str) -> int:
    with stack.api_client() as client:
        return AppsV1Api(client).read_namespaced_deployment(deployment, namespace).spec.replicas


@contextmanager
def stopped(stack: Stack, name: str) -> Iterator[None]:
    """One of the stack's processes stopped (SIGTERM, SIGKILL after 10 s) for the block, then started again
    the same way (argv, working directory, log); the stack's records follow, so teardown stops the new one."""
    proc = stack._procs[name]
    argv = [str(a) for a in proc.args]  # type: ignore[union-attr]
    cwd = Path(os.readlink(f"/proc/{proc.pid}/cwd"))
    log = Path(os.readlink(f"/proc/{proc.pid}/fd/1"))
    procs.stop(proc.pid, grace=10, proc=proc)
    try:
        yield
    finally:
        restarted = procs.start(argv, log, cwd=cwd)
        stack._procs[name], stack.pids[name] = restarted, restarted.pid


def test_prometheus_down_holds_replicas_then_scaling_resumes(
    stack: Stack, namespace: str, record_property: Any
) -> None:
    """Two replicas planned from hints, no traffic: with metrics the policy scales down after its 20 s window;
    with Prometheus stopped first, it must hold (MetricsAvailable=False) well past that window."""
    deployment, _ = two_replica_service(stack, namespace)
    with stopped(stack, "prometheus"):
        wait_condition(stack, namespace, "tiny", "MetricsAvailable", "False", 60, "PrometheusUnavailable")
        held_until = time.monotonic() + 2 * POLICY.scale_down_stabilization_s
        while time.monotonic() < held_until:
            assert replicas_of(stack, namespace, deployment) == 2, "scaled without metrics"
            time.sleep(1)
    wait_condition(stack, namespace, "tiny", "MetricsAvailable", "True", timeout=90)
    procs.wait_until(
        lambda: replicas_of(stack, namespace, deployment) < 2,
        120,
        "a scale-down once metrics are back",
        interval=1,
    )
    held_s = 2 * POLICY.scale_down_stabilization_s
    record_property("fault", {"name": "Prometheus stopped", "replicas_held_s": held_s, "recovered": True})


def test_worker_killed_mid_stream_fails_only_its_clients_and_restarts(
    stack: Stack, namespace: str, record_property: Any
) -> None:
    """minReplicas 2: no scale-down of the idle fleet meanwhile (its drain would cut long streams too)."""
    deployment, svc = two_replica_service(stack, namespace, min_replicas=2)
    procs.wait_until(
        lambda: len(stack.service_endpoints(namespace, svc)) == 2, 180, "two Ready workers", interval=1
    )
    backends = stack.service_endpoints(namespace, svc)
    with stack.api_client() as client:
        pods = (
            CoreV1Api(client)
            .list_namespaced_pod(namespace, label_selector=f"{service.LABEL_SERVICE}=tiny")
            .items
        )
    victim = next(p for p in pods if f"{p.status.pod_ip}:" in backends[0])
    run = loadgen.Run()
    balancer = loadgen.Balancer(lambda: backends)

    async def drive() -> None:
        await balancer.refresh()
        async with httpx.AsyncClient(timeout=120) as client:
            arrival = loadgen.Arrival(0.0, 16, STREAM_TOKENS)
            tasks = [
                asyncio.create_task(loadgen.one_request(client, balancer, arrival, run, i)) for i in range(6)
            ]
            await asyncio.sleep(1.5)
            os.kill(container_pid(stack, victim), signal.SIGKILL)
            await asyncio.gather(*tasks)

    asyncio.run(drive())
    on_victim = [r for r in run.results if r.backend == backends[0]]
    others = [r for r in run.results if r.backend != backends[0]]
    assert on_victim and others and len(run.results) == 6
    assert all(r.error for r in on_victim), "a stream on the killed worker claimed success"
    assert all(r.ok and r.tokens == STREAM_TOKENS for r in others), [r.error for r in others]

    def restarted() -> bool:
        with stack.api_client() as client:
            pod = CoreV1Api(client).read_namespaced_pod(victim.metadata.name, namespace)
        return restarts(pod) >= 1 and backends[0] in stack.service_endpoints(namespace, svc)

    procs.wait_until(restarted, 180, "the killed worker restarted and Ready", interval=1)
    assert replicas_of(stack, namespace, deployment) >= 2  # the streams' load may have scaled it up
    record_property(
        "fault",
        {
            "name": "worker SIGKILLed mid-stream",
            "streams": len(run.results),
            "cut_on_the_killed_worker": len(on_victim),
            "completed_elsewhere": len(others),
            "lost_elsewhere": 0,
        },
    )


def test_operator_killed_after_creating_children_converges_without_duplicates(
    stack: Stack, namespace: str, record_property: Any
) -> None:
    pod = operator_pod(stack)
    pid, before = container_pid(stack, pod), restarts(pod)
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    manifest["spec"]["mode"] = "auto"
    service.apply(stack, manifest)
    procs.wait_until(
        lambda: bool(children(stack, namespace)["deployments"]), 60, "a first child", interval=0.05
    )
    os.kill(pid, signal.SIGKILL)
    status_at_kill = service.get_service(stack, namespace, "tiny").get("status") or {}

    def back() -> bool:
        now = operator_pod(stack)
        return restarts(now) > before and now.status.container_statuses[0].ready is not False

    procs.wait_until(back, 120, "the operator container restarted", interval=1)
    service.wait_ready(stack, namespace, "tiny", timeout=180)
    obj = service.get_service(stack, namespace, "tiny")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    found = children(stack, namespace)
    assert found["deployments"] == ["tiny-interactive"] and len(found["replicasets"]) == 1, found
    assert found["services"] == ["tiny-interactive"] and len(found["configmaps"]) == 1, found
    record_property(
        "fault",
        {
            "name": "operator SIGKILLed after creating its first child",
            "status_written_before_kill": bool(status_at_kill.get("plan")),
            "duplicates": 0,
        },
    )


def test_api_server_restart_the_operator_resumes_without_duplicates(
    stack: Stack, namespace: str, record_property: Any
) -> None:
    service.apply(stack, service.tiny_service(namespace, POLICY.name, SLO))
    service.wait_ready(stack, namespace, "tiny", timeout=180)
    before = children(stack, namespace)
    with stopped(stack, "kube-apiserver"):
        time.sleep(3)
    procs.wait_until(
        lambda: bool(service.get_service(stack, namespace, "tiny")), 60, "the API server back", interval=1
    )
    # The operator still acts: a spec edit after the restart is planned and observed.
    edited = service.tiny_service(namespace, POLICY.name, {**SLO, "ttftP95Ms": 1400.0})
    service.apply(stack, edited)
    generation = service.get_service(stack, namespace, "tiny")["metadata"]["generation"]
    procs.wait_until(
        lambda: (
            (service.get_service(stack, namespace, "tiny").get("status") or {}).get("observedGeneration")
            == generation
        ),
        90,
        "the operator to observe the edit made after the restart",
        interval=1,
    )
    assert children(stack, namespace) == before
    record_property("fault", {"name": "API server restarted", "duplicates": 0, "resumed": True})
