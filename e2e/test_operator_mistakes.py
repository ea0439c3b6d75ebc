"""Mistakes a new user makes, on the real stack with goodput installed from manifests/: manifests the API server
accepts but the operator cannot serve, and workers that cannot start. Each must be said clearly, in a condition
and an Event naming the field (or the containers' own reason), with no error loop in the operator's log and
nothing lost: no capacity bought that cannot help, running workers left serving.

Each test records what it saw (``operator_mistakes``) for bench/reliability.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api

from e2e import operator as goodput
from e2e import procs, service
from e2e.stack import Stack

pytestmark = pytest.mark.e2e

POLICY = service.FastPolicy(name="mistakes")
SLO = {"ttftP95Ms": 1500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}
# Long enough for several control intervals of the policy and kopf's retry backoff (10 s in operator/main.py):
# a manifest that made the operator fail would show up as repeated errors in its log within it.
OBSERVE_S = 3 * POLICY.evaluation_interval_s + 12.0
GOODPUT = Path(sys.executable).with_name("goodput")
ERROR_MARKS = (" ERROR ", "Traceback (most recent call last)")


@pytest.fixture(scope="module")
def installed(cluster: Stack) -> Iterator[str]:
    with goodput.installed(cluster, POLICY) as pod:
        yield pod


@pytest.fixture
def namespace(cluster: Stack, installed: str) -> Iterator[str]:
    name = f"mistakes-{uuid.uuid4().hex[:6]}"
    with cluster.api_client() as client:
        CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    yield name
    with cluster.api_client() as client:
        CoreV1Api(client).delete_namespace(name)


def operator_errors(cluster: Stack, pod: str) -> int:
    """Error lines (and tracebacks) the operator has logged so far."""
    log = cluster.pod_logs(goodput.NAMESPACE, pod)
    return sum(1 for line in log.splitlines() if any(mark in line for mark in ERROR_MARKS))


def warnings_on(cluster: Stack, namespace: str, name: str) -> list[Any]:
    with cluster.api_client() as client:
        events = CoreV1Api(client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
    return [e for e in events.items if e.type == "Warning"]


def deployments(cluster: Stack, namespace: str) -> dict[str, int]:
    with cluster.api_client() as client:
        items = AppsV1Api(client).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d.spec.replicas for d in items}


def wait_condition(
    cluster: Stack, namespace: str, name: str, kind: str, check: Callable[[dict], bool], timeout: float = 90
) -> dict:
    def seen() -> bool:
        return check(service.condition(service.get_service(cluster, namespace, name), kind))

    procs.wait_until(seen, timeout, f"{namespace}/{name} {kind}", interval=0.5)
    return service.condition(service.get_service(cluster, namespace, name), kind)


def invalid(cluster: Stack, namespace: str, name: str) -> dict:
    return wait_condition(cluster, namespace, name, "InvalidSpec", lambda c: c.get("status") == "True")


def named(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    manifest = service.tiny_service(namespace, POLICY.name, SLO)
    manifest["metadata"]["name"] = name
    manifest["spec"].update(spec)
    return manifest


def completions(cluster: Stack, namespace: str, svc: str, model: str, count: int) -> int:
    """Requests answered 200 by the service's backends, of `count` sent."""
    answered = 0
    for _ in range(count):
        backend = cluster.service_endpoints(namespace, svc)[0]
        body = {"model": model, "prompt": "hello", "max_tokens": 4}
        answered += httpx.post(f"http://{backend}/v1/completions", json=body, timeout=60).status_code == 200
    return answered


MODELS = {
    "nopreset": ({"name": "nopreset", "source": "random:nonexistent"}, "spec.model.source"),
    # A preset the planner knows (a public checkpoint's shape) but the worker cannot build.
    "plannerpreset": ({"name": "plannerpreset", "source": "random:llama-3-8b"}, "spec.model.source"),
    # A folder only the workers would mount: the operator cannot read its config.json.
    "noshape": ({"name": "noshape", "source": "/models/Meta-Llama-3-8B-Instruct"}, "spec.model.architecture"),
}


def test_models_the_operator_cannot_plan_or_the_worker_cannot_load_are_refused_naming_the_field(
    cluster: Stack, installed: str, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    errors_before = operator_errors(cluster, installed)
    began = time.monotonic()
    for name, (model, _) in MODELS.items():
        service.apply(cluster, named(namespace, name, model=model))
    for name, (_, field) in MODELS.items():
        condition = invalid(cluster, namespace, name)
        assert condition["message"].startswith(f"{field}: "), condition
        ready = service.condition(service.get_service(cluster, namespace, name), "Ready")
        assert ready["status"] == "False", ready
        row = cluster.kubectl("get", "gpsvc", name, "-n", namespace, "--no-headers")
        assert row.returncode == 0 and ready["reason"] in row.stdout.split(), row  # not a blank row
    time.sleep(OBSERVE_S)
    errors = operator_errors(cluster, installed) - errors_before
    observed_s = time.monotonic() - began
    for name, (_, field) in MODELS.items():
        warned = warnings_on(cluster, namespace, name)
        assert len(warned) == 1 and warned[0].message.startswith(f"{field}: "), [w.message for w in warned]
        record_property(
            "operator_mistakes",
            {
                "case": f"model {name}",
                "condition": service.condition(service.get_service(cluster, namespace, name), "InvalidSpec")[
                    "reason"
                ],
                "field": field,
                "warning_events": len(warned),
                "children": 0,
            },
        )
    assert deployments(cluster, namespace) == {}
    record_property(
        "operator_log_errors", {"case": "unloadable models", "errors": errors, "seconds": round(observed_s)}
    )
    assert errors == 0, cluster.pod_logs(goodput.NAMESPACE, installed)[-4000:]


def test_an_slo_no_replica_can_meet_is_refused_on_update_as_on_create_and_buys_nothing(
    cluster: Stack, installed: str, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    service.apply(cluster, named(namespace, "tiny"))
    service.wait_ready(cluster, namespace, "tiny")
    deployment, svc = service.workers(cluster, namespace, "tiny")
    replicas = deployments(cluster, namespace)[deployment]
    errors_before = operator_errors(cluster, installed)
    impossible = {**SLO, "ttftP95Ms": 2.0}  # an unloaded tiny CPU replica takes about 4 ms
    service.apply(cluster, named(namespace, "tiny", slo=impossible))
    service.apply(cluster, named(namespace, "fresh", slo=impossible))
    updated, created = invalid(cluster, namespace, "tiny"), invalid(cluster, namespace, "fresh")
    assert updated["reason"] == created["reason"] == "SLOUnachievable", (updated, created)
    for condition in (updated, created):
        assert (
            condition["message"].startswith("spec.slo: ") and "> 2 ms even unloaded" in condition["message"]
        )
    time.sleep(OBSERVE_S)
    assert deployments(cluster, namespace) == {deployment: replicas}  # not scaled, nothing built for "fresh"
    for name in ("tiny", "fresh"):
        assert service.condition(service.get_service(cluster, namespace, name), "Ready")["status"] == "False"
        assert [w.reason for w in warnings_on(cluster, namespace, name)] == ["SLOUnachievable"]
    sent = 3
    answered = completions(cluster, namespace, svc, "tiny", sent)  # the running workers still serve
    errors = operator_errors(cluster, installed) - errors_before
    record_property(
        "operator_mistakes",
        {
            "case": "unreachable SLO on update and on create",
            "condition": updated["reason"],
            "field": "spec.slo",
            "replicas": [replicas, deployments(cluster, namespace)[deployment]],
            "requests": {"sent": sent, "answered": answered},
        },
    )
    record_property(
        "operator_log_errors", {"case": "unreachable SLO", "errors": errors, "seconds": OBSERVE_S}
    )
    assert answered == sent
    assert errors == 0, cluster.pod_logs(goodput.NAMESPACE, installed)[-4000:]


def test_sub_millisecond_targets_are_shown_as_written(cluster: Stack, installed: str, namespace: str) -> None:
    service.apply(cluster, named(namespace, "fast", slo={**SLO, "tpotP95Ms": 0.1}))
    condition = invalid(cluster, namespace, "fast")
    assert "> 0.1 ms even unloaded" in condition["message"], condition
    argv = [str(GOODPUT), "explain", "fast", "-n", namespace, f"--kubeconfig={cluster.kubeconfig}"]
    explained = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    text = " ".join(explained.stdout.split())
    assert "> 0.1 ms even unloaded" in text and "> 0 ms" not in text, explained.stdout + explained.stderr


def test_a_worker_that_cannot_start_says_why_in_ready_and_an_event(
    cluster: Stack, installed: str, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    """An H100 pool on a node without an NVIDIA driver: the workers crash at start (or, on a node that offers
    no GPUs, cannot be scheduled). Ready says which, in the containers' (or the scheduler's) own words."""
    gpu = [{"type": "H100-SXM", "pricePerHour": 4.0, "maxCount": 4}]
    service.apply(cluster, named(namespace, "nodriver", accelerators=gpu))
    ready = wait_condition(
        cluster,
        namespace,
        "nodriver",
        "Ready",
        lambda c: c.get("status") == "False" and c.get("reason") not in ("ReplicasNotReady", "NoPlan", None),
        timeout=180,
    )
    assert ready["reason"] in ("CrashLoopBackOff", "Error", "Unschedulable"), ready
    assert "exit code" in ready["message"] or "nvidia.com/gpu" in ready["message"], ready
    warned = warnings_on(cluster, namespace, "nodriver")
    assert any(w.reason == ready["reason"] for w in warned), [(w.reason, w.message) for w in warned]
    record_property(
        "operator_mistakes",
        {
            "case": "workers that cannot start (GPU pool, no driver)",
            "condition": ready["reason"],
            "message": ready["message"][:300],
            "warning_events": len(warned),
        },
    )
