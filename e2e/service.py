"""Deploying an InferenceService on the local stack and watching what the operator does with it.

Shared by the scenarios (e2e/test_scenarios.py) and the demo (e2e/demo.py): a test copy of the tiny CPU
example in a namespace of its own with a fast SLOPolicy (or serving a heavier preset), readiness waits, a
twin of one replica outside the Service to measure what a replica can serve, and a watcher that samples the
workers' Deployment and the service's status so timelines come from API objects, not logs.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from e2e import procs
from e2e.stack import REPO, Stack

GROUP, VERSION, PLURAL = "goodput.dev", "v1alpha1", "inferenceservices"
TINY_EXAMPLE = REPO / "manifests" / "examples" / "tiny-cpu.yaml"
LABEL_SERVICE = "goodput.dev/inferenceservice"


@dataclass(frozen=True)
class FastPolicy:
    """An SLOPolicy short enough for a test: decisions every few seconds, a short scale-down window."""

    name: str = "e2e-fast"
    evaluation_interval_s: float = 5.0
    scale_down_stabilization_s: float = 30.0
    cooldown_s: float = 5.0
    max_scale_up_step: int = 3
    max_scale_down_step: int = 1
    scale_to_zero_after_s: float | None = None  # the policy's default when None

    def manifest(self) -> dict[str, Any]:
        zero = (
            {}
            if self.scale_to_zero_after_s is None
            else {"scaleToZeroAfterSeconds": self.scale_to_zero_after_s}
        )
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SLOPolicy",
            "metadata": {"name": self.name},
            "spec": {
                "evaluationIntervalSeconds": self.evaluation_interval_s,
                "scaleUpStabilizationSeconds": 0,
                "scaleDownStabilizationSeconds": self.scale_down_stabilization_s,
                "cooldownSeconds": self.cooldown_s,
                "maxScaleUpStep": self.max_scale_up_step,
                "maxScaleDownStep": self.max_scale_down_step,
                "staleAfterSeconds": max(30.0, 3 * self.evaluation_interval_s),
                **zero,
            },
        }


def tiny_service(namespace: str, policy: str, slo: dict[str, float], max_replicas: int = 4) -> dict[str, Any]:
    """manifests/examples/tiny-cpu.yaml in ``namespace`` under ``policy`` with the given SLO."""
    manifest = copy.deepcopy(yaml.safe_load(Path(TINY_EXAMPLE).read_text()))
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["policyRef"] = policy
    # A copy: the caller's dict stays theirs, whatever a test then does to the manifest.
    manifest["spec"]["slo"] = copy.deepcopy(slo)
    manifest["spec"]["scaling"]["maxReplicas"] = max_replicas
    manifest["spec"]["accelerators"][0]["maxCount"] = max_replicas
    return manifest


def sized_service(
    namespace: str,
    policy: str,
    slo: dict[str, float],
    *,
    name: str,
    source: str,
    prompt_tokens: int,
    output_tokens: int,
    expected_rps: float,
    max_replicas: int = 4,
) -> dict[str, Any]:
    """The tiny example serving another model (``random:<preset>``) under fixed-length traffic hints."""
    manifest = tiny_service(namespace, policy, slo, max_replicas)
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"] |= {"name": name, "source": source}
    manifest["spec"]["traffic"] |= {
        "expectedRps": expected_rps,
        "promptTokens": {"p50": prompt_tokens, "p95": prompt_tokens},
        "outputTokens": {"p50": output_tokens, "p95": output_tokens},
    }
    return manifest


def apply(stack: Stack, manifest: dict[str, Any]) -> None:
    """`kubectl apply --server-side` of one object, sent as JSON (escaped: any string survives the trip)."""
    result = stack.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr}")


def get_service(stack: Stack, namespace: str, name: str) -> dict[str, Any]:
    with stack.api_client() as client:
        return CustomObjectsApi(client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def workers(stack: Stack, namespace: str, name: str) -> tuple[str, str]:
    """(Deployment, Service) names of the service's one tier, once the operator has created them."""
    found: dict[str, str] = {}

    def created() -> bool:
        with stack.api_client() as client:
            selector = f"{LABEL_SERVICE}={name}"
            deployments = (
                AppsV1Api(client).list_namespaced_deployment(namespace, label_selector=selector).items
            )
            services = CoreV1Api(client).list_namespaced_service(namespace, label_selector=selector).items
        if deployments and services:
            found["deployment"], found["service"] = deployments[0].metadata.name, services[0].metadata.name
        return bool(found)

    procs.wait_until(created, 60, f"the operator to create {namespace}/{name}'s workers", interval=0.5)
    return found["deployment"], found["service"]


def wait_ready(stack: Stack, namespace: str, name: str, timeout: float = 120.0) -> None:
    """The service's Ready condition True and at least one backend serving."""

    def ready() -> bool:
        obj = get_service(stack, namespace, name)
        return condition(obj, "Ready").get("status") == "True"

    procs.wait_until(ready, timeout, f"{namespace}/{name} Ready", interval=1.0)
    _, service = workers(stack, namespace, name)
    procs.wait_until(
        lambda: bool(stack.service_backends(namespace, service)), timeout, "a backend", interval=1.0
    )


@contextmanager
def twin(stack: Stack, namespace: str, deployment: str, timeout: float = 120.0) -> Iterator[str]:
    """A bare Pod from the Deployment's pod template, Ready; yields its ``ip:port``; deleted and gone after.

    The same worker, flags and engine config as a replica, on the same node, but without the template's
    labels and annotations: no Service routes to it, and neither Prometheus nor the operator sees its load.
    What it can serve is what one replica can.
    """
    name = f"{deployment}-twin"
    with stack.api_client() as client:
        core = CoreV1Api(client)
        template = AppsV1Api(client).read_namespaced_deployment(deployment, namespace).spec.template
        spec = client.sanitize_for_serialization(template.spec)
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        core.create_namespaced_pod(namespace, body)
        try:

            def ready() -> bool:
                pod = core.read_namespaced_pod(name, namespace)
                conditions = {c.type: c.status for c in pod.status.conditions or []}
                return conditions.get("Ready") == "True" and bool(pod.status.pod_ip)

            procs.wait_until(ready, timeout, f"twin pod {namespace}/{name} Ready", interval=0.5)
            pod = core.read_namespaced_pod(name, namespace)
            port = pod.spec.containers[0].ports[0].container_port
            yield f"{pod.status.pod_ip}:{port}"
        finally:
            core.delete_namespaced_pod(name, namespace)

            def gone() -> bool:
                return not core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items

            procs.wait_until(gone, timeout, f"twin pod {namespace}/{name} gone", interval=0.5)


@dataclass
class Sample:
    t: float  # time.monotonic()
    replicas: int  # the Deployment's spec.replicas: what the operator decided
    ready: int
    decision: str  # status.lastDecision.reason
    observed: dict[str, Any]


@dataclass
class Watcher:
    """Samples the tier's Deployment and the service's status every ``period_s`` on a thread."""

    stack: Stack
    namespace: str
    name: str
    deployment: str
    period_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, daemon=True, name="watcher")
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with self.stack.api_client() as client:
            apps, custom = AppsV1Api(client), CustomObjectsApi(client)
            while not self._stop.is_set():
                try:
                    dep = apps.read_namespaced_deployment(self.deployment, self.namespace)
                    svc = custom.get_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, self.name
                    )
                except Exception as exc:  # a hiccup is a gap in the timeline, not a failure
                    print(f"watcher: {exc}", flush=True)
                else:
                    status = svc.get("status") or {}
                    self.samples.append(
                        Sample(
                            t=time.monotonic(),
                            replicas=dep.spec.replicas or 0,
                            ready=dep.status.ready_replicas or 0,
                            decision=(status.get("lastDecision") or {}).get("reason", ""),
                            observed=status.get("observed") or {},
                        )
                    )
                self._stop.wait(self.period_s)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def first_change(self, after: float, more: bool) -> Sample | None:
        """The first sample after ``after`` with more (or fewer) replicas than the last sample before it."""
        before = [s for s in self.samples if s.t <= after]
        base = before[-1].replicas if before else None
        for s in self.samples:
            if s.t > after and base is not None and (s.replicas > base if more else s.replicas < base):
                return s
        return None
