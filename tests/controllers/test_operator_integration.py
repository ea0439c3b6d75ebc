"""The operator in-process: kopf's KopfRunner against an emulated API server, reading a real Prometheus.

Prometheus (Debian's binary, on loopback) scrapes synthetic workers whose vLLM-named series the tests set.
One operator runs for the whole module; the tests follow one service through its life, in order:
create → children; load rises → replicas rise with an Event saying why; the policy is edited → the plan
changes; Prometheus stops → MetricsAvailable=False and replicas held. Plus recommend mode and an impossible
spec. Timeouts are generous: the assertions are about behaviour, never about speed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
import yaml
from kopf.testing import KopfRunner

from testkit import prometheus
from testkit.apiserver import ApiServer
from testkit.kubeconfig import write_kubeconfig
from testkit.specs import LLAMA_405B_ARCHITECTURE
from testkit.workers import SyntheticWorkers, Traffic

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(not prometheus.available(), reason="needs Debian's prometheus binary"),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(300),
]

ROOT = Path(__file__).resolve().parents[2]
NS = "team-a"
ISVC = "goodput.dev/v1alpha1/inferenceservices"
POLICIES = "goodput.dev/v1alpha1/slopolicies"
POLICY = {
    "apiVersion": "goodput.dev/v1alpha1",
    "kind": "SLOPolicy",
    "metadata": {"name": "fast"},
    "spec": {
        "evaluationIntervalSeconds": 1,
        "staleAfterSeconds": 5,
        "cooldownSeconds": 0,
        "scaleDownStabilizationSeconds": 5,
        "calibration": {"enabled": False},
    },
}


class Cluster:
    """Handles for the tests: the emulated API server, the synthetic workers and Prometheus."""

    def __init__(
        self, api: ApiServer, url: str, workers: SyntheticWorkers, prom: prometheus.PrometheusProcess
    ):
        self.api, self.url, self.workers, self.prom = api, url, workers, prom

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.api.objects or self.api.objects[key].deleted:
            return None
        return self.api.objects[key].raw

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, namespace, _), obj in self.api.objects.items()
            if resource.plural == "events" and namespace == NS and not obj.deleted
            if obj.raw.get("involvedObject", {}).get("name") == name
        ]

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        body = self.get(ISVC, NS, name) or {}
        return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), None)

    async def send(
        self, method: str, path: str, body: dict[str, Any], content_type: str = "application/json"
    ) -> None:
        async with self.api.clients[0].request(
            method, path, json=body, headers={"Content-Type": content_type}
        ) as response:
            assert response.status < 400, await response.text()


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


def _service(name: str, **spec_changes: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((ROOT / "manifests/examples/tiny-cpu.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": NS}
    manifest["spec"]["policyRef"] = "fast"
    manifest["spec"].update(spec_changes)
    return manifest


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    workers = SyntheticWorkers()
    port = workers.serve()
    prom = prometheus.PrometheusProcess([f"127.0.0.1:{port}"], scrape_interval_s=1.0)
    prom.start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    saved = dict(os.environ)
    async with ApiServer() as api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        write_kubeconfig(kubeconfig, url)
        os.environ.update(
            KUBECONFIG=str(kubeconfig),
            GOODPUT_OPERATOR_PROMETHEUS_URL=prom.url,
            GOODPUT_OPERATOR_POLL_INTERVAL_S="1",
            GOODPUT_OPERATOR_WINDOW_S="6",
            GOODPUT_OPERATOR_METRICS_PORT="0",
        )
        cluster = Cluster(api, url, workers, prom)
        await cluster.send("POST", "/apis/goodput.dev/v1alpha1/slopolicies", POLICY)
        runner = KopfRunner(["run", "--standalone", "-A", str(ROOT / "operator/main.py")], timeout=60)
        runner.__enter__()
        try:
            yield cluster
        finally:
            await asyncio.to_thread(runner.__exit__, None, None, None)
            os.environ.clear()
            os.environ.update(saved)
            prom.close()
            workers.stop()
    assert runner.exception is None


async def test_create_builds_the_children(cluster: Cluster) -> None:
    cluster.workers.set((NS, "tiny", "interactive"), Traffic(rps=2.0, ttft_s=0.05, itl_s=0.004))
    await cluster.send(
        "POST", f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices", _service("tiny")
    )
    body = await eventually(
        lambda: (
            (cluster.get(ISVC, NS, "tiny") or {}).get("status", {}).get("plan")
            and cluster.get(ISVC, NS, "tiny")
        ),
        what="a plan in status",
    )
    plan = body["status"]["plan"]
    uid = body["metadata"]["uid"]
    deployment = await eventually(
        lambda: cluster.get("apps/v1/deployments", NS, "tiny-interactive"), what="Deployment"
    )
    assert deployment["spec"]["replicas"] == plan["tiers"][0]["replicas"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == str(plan["tiers"][0]["maxBatch"])
    for resource, name in [
        ("v1/configmaps", "tiny-engine"),
        ("v1/services", "tiny-interactive"),
        ("policy/v1/poddisruptionbudgets", "tiny-workers"),
        ("apps/v1/deployments", "tiny-interactive"),
    ]:
        child = cluster.get(resource, NS, name)
        assert child is not None, name
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    assert "spec" in body and body["spec"]["policyRef"] == "fast"  # the operator never rewrote the spec
    assert any(e["reason"] == "Planned" for e in cluster.events("tiny"))
    await eventually(
        lambda: (cluster.condition("tiny", "MetricsAvailable") or {}).get("status") == "True",
        what="fresh metrics",
    )
    ready = await eventually(lambda: cluster.condition("tiny", "Ready"), what="Ready")
    assert ready["observedGeneration"] == body["metadata"]["generation"]


async def test_load_rises_and_replicas_follow_with_a_reason(cluster: Cluster) -> None:
    before = cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"]
    cluster.workers.update((NS, "tiny", "interactive"), rps=40.0, ttft_s=2.0, waiting=20.0, running=30.0)
    await eventually(
        lambda: cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"] > before,
        what="more replicas",
    )
    scaled = [e for e in cluster.events("tiny") if e["reason"] == "Scaled"]
    assert scaled, "no Scaled event"
    message = scaled[-1]["message"]
    assert f"{before}→" in message and "TTFT p95" in message and "rps" in message
    status = cluster.get(ISVC, NS, "tiny")["status"]
    assert status["lastDecision"]["reason"] == message
    assert (cluster.condition("tiny", "SLOMet") or {}).get("status") == "False"


async def test_editing_the_policy_changes_the_plan(cluster: Cluster) -> None:
    cluster.workers.update((NS, "tiny", "interactive"), rps=2.0, ttft_s=0.05, waiting=0.0, running=1.0)
    window = {"interactive": {"minMs": 12, "maxMs": 15}, "batch": {"minMs": 20, "maxMs": 40}}
    await cluster.send(
        "PATCH",
        "/apis/goodput.dev/v1alpha1/slopolicies/fast",
        {"spec": {"tierBatchWindows": window}},
        "application/merge-patch+json",
    )
    plan = await eventually(
        lambda: (
            12 <= cluster.get(ISVC, NS, "tiny")["status"]["plan"]["batchWindowMs"] <= 15
            and cluster.get(ISVC, NS, "tiny")["status"]["plan"]
        ),
        what="a plan with the new batch window",
    )
    args = cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert float(args[args.index("--batch-window-ms") + 1]) == plan["batchWindowMs"]
    # The policy's status says which generation the operator took and how many services use it.
    policy = await eventually(
        lambda: (
            (p := cluster.get(POLICIES, None, "fast"))
            and p.get("status", {}).get("observedGeneration") == p["metadata"]["generation"]
            and p
        ),
        what="the policy's status at its new generation",
    )
    (ready,) = [c for c in policy["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Accepted"
    assert policy["status"]["services"] == 1


async def test_recommend_mode_writes_status_only(cluster: Cluster) -> None:
    await cluster.send(
        "POST",
        f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices",
        _service("advice", mode="recommend"),
    )
    await eventually(
        lambda: (cluster.get(ISVC, NS, "advice") or {}).get("status", {}).get("plan"), what="a plan"
    )
    await asyncio.sleep(2)
    assert cluster.get("apps/v1/deployments", NS, "advice-interactive") is None
    # A second service on the policy: its count follows without any SLOPolicy event.
    await eventually(
        lambda: cluster.get(POLICIES, None, "fast")["status"].get("services") == 2, what="two users counted"
    )
    assert cluster.get("v1/configmaps", NS, "advice-engine") is None
    assert (cluster.condition("advice", "Ready") or {}).get("reason") == "RecommendOnly"


async def test_an_impossible_spec_gets_a_condition_and_no_children(cluster: Cluster) -> None:
    huge = _service("huge")
    huge["spec"]["model"]["architecture"] = dict(LLAMA_405B_ARCHITECTURE)
    await cluster.send("POST", f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices", huge)
    condition = await eventually(
        lambda: next(
            (
                c
                for c in [
                    cluster.condition("huge", "InvalidSpec"),
                    cluster.condition("huge", "CapacityLimited"),
                ]
                if c and c["status"] == "True"
            ),
            None,
        ),
        what="InvalidSpec or CapacityLimited",
    )
    assert condition["message"]
    await asyncio.sleep(1)
    for resource, name in [
        ("v1/configmaps", "huge-engine"),
        ("apps/v1/deployments", "huge-interactive"),
        ("v1/services", "huge-interactive"),
        ("policy/v1/poddisruptionbudgets", "huge-workers"),
    ]:
        assert cluster.get(resource, NS, name) is None, name


async def test_a_model_the_worker_cannot_load_is_refused_once_naming_the_field(cluster: Cluster) -> None:
    """Accepted by the API server, unplannable: a preset the worker lacks, a folder the operator cannot read.
    Each gets InvalidSpec naming the field and one Warning Event; nothing is built and nothing retried."""
    cases = {
        "nopreset": ({"name": "x", "source": "random:nonexistent"}, "spec.model.source"),
        "nofolder": ({"name": "x", "source": "/models/Meta-Llama-3-8B-Instruct"}, "spec.model.architecture"),
    }
    for name, (model, _) in cases.items():
        manifest = _service(name)
        manifest["spec"]["model"] = model
        await cluster.send("POST", f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices", manifest)
    for name, (_, field) in cases.items():
        invalid = await eventually(
            lambda name=name: (c := cluster.condition(name, "InvalidSpec")) and c["status"] == "True" and c,
            what=f"{name} InvalidSpec",
        )
        assert invalid["message"].startswith(f"{field}: "), invalid
        assert cluster.condition(name, "Ready")["status"] == "False"
    await asyncio.sleep(4)  # several control intervals and kopf's retry window: still one Event each
    for name, (_, field) in cases.items():
        warnings = [e for e in cluster.events(name) if e["type"] == "Warning"]
        assert len(warnings) == 1 and field in warnings[0]["message"], warnings
        assert cluster.get("apps/v1/deployments", NS, f"{name}-interactive") is None
        assert cluster.get("v1/configmaps", NS, f"{name}-engine") is None


async def test_an_slo_no_replica_can_meet_set_on_a_running_service_is_refused_not_scaled(
    cluster: Cluster,
) -> None:
    """ttftP95Ms 2 on the running tiny service (an unloaded replica takes ~4 ms): the same InvalidSpec as a new
    object gets, and its replicas stay where they were, though observed TTFT breaches with a queue."""
    path = f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices/tiny"
    replicas = cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"]
    cluster.workers.update((NS, "tiny", "interactive"), rps=2.0, ttft_s=0.05, waiting=5.0, running=1.0)
    merge = "application/merge-patch+json"
    await cluster.send("PATCH", path, {"spec": {"slo": {"ttftP95Ms": 2}}}, merge)
    invalid = await eventually(
        lambda: (c := cluster.condition("tiny", "InvalidSpec")) and c["status"] == "True" and c,
        what="InvalidSpec on the update",
    )
    assert invalid["reason"] == "SLOUnachievable" and invalid["message"].startswith("spec.slo: "), invalid
    assert "4.07 ms > 2 ms" in invalid["message"] or "> 2 ms even unloaded" in invalid["message"], invalid
    await asyncio.sleep(6)  # six control intervals of the fast policy, each seeing the breach and the queue
    assert cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"] == replicas
    assert cluster.condition("tiny", "Ready")["status"] == "False"
    assert any(e["reason"] == "SLOUnachievable" and e["type"] == "Warning" for e in cluster.events("tiny"))
    # A reachable SLO again: managed again, the spec valid.
    cluster.workers.update((NS, "tiny", "interactive"), rps=2.0, ttft_s=0.05, waiting=0.0, running=1.0)
    await cluster.send("PATCH", path, {"spec": {"slo": {"ttftP95Ms": 500}}}, merge)
    await eventually(
        lambda: (cluster.condition("tiny", "InvalidSpec") or {}).get("status") == "False",
        what="InvalidSpec=False once the SLO is reachable",
    )


async def test_an_idle_service_scales_to_zero_and_a_request_held_by_the_router_wakes_it(
    cluster: Cluster,
) -> None:
    """minReplicas 0 with a router: idle for the policy's period → every tier at zero, Ready=ScaledToZero; the
    workers' series go with their pods, and a request the router holds brings one replica back."""
    policy = {
        "apiVersion": "goodput.dev/v1alpha1",
        "kind": "SLOPolicy",
        "metadata": {"name": "zero"},
        "spec": {**POLICY["spec"], "scaleToZeroAfterSeconds": 3},
    }
    await cluster.send("POST", "/apis/goodput.dev/v1alpha1/slopolicies", policy)
    key = (NS, "sleepy", "interactive")
    cluster.workers.set(key, Traffic(rps=0.0, running=0.0, waiting=0.0))
    cluster.workers.set_router(key, queued=0.0)
    manifest = _service("sleepy", policyRef="zero", router={})
    manifest["spec"]["scaling"]["minReplicas"] = 0
    await cluster.send("POST", f"/apis/goodput.dev/v1alpha1/namespaces/{NS}/inferenceservices", manifest)
    deployment = "sleepy-interactive"
    await eventually(lambda: cluster.get("apps/v1/deployments", NS, deployment), what="the workers")
    assert cluster.get("apps/v1/deployments", NS, deployment)["spec"]["replicas"] >= 1  # the hint: 2 rps
    await eventually(
        lambda: cluster.get("apps/v1/deployments", NS, deployment)["spec"]["replicas"] == 0,
        what="scaled to zero",
    )
    ready = await eventually(
        lambda: (c := cluster.condition("sleepy", "Ready")) and c["reason"] == "ScaledToZero" and c,
        what="Ready=ScaledToZero",
    )
    assert ready["status"] == "True"
    status = cluster.get(ISVC, NS, "sleepy")["status"]
    assert status["plan"]["replicas"] == 0 and "scaled to zero" in status["lastDecision"]["reason"]
    cluster.workers.remove(key)  # the pods are gone; the router stays
    await asyncio.sleep(3)
    assert cluster.get("apps/v1/deployments", NS, deployment)["spec"]["replicas"] == 0  # nothing held: stay
    cluster.workers.set_router(key, queued=1.0)
    await eventually(
        lambda: cluster.get("apps/v1/deployments", NS, deployment)["spec"]["replicas"] == 1,
        timeout=15,
        what="a replica woken by the router's queue",
    )
    # the operator patches the Deployment first and posts the decision's Event after it
    await eventually(
        lambda: [
            e
            for e in cluster.events("sleepy")
            if e["reason"] == "Scaled" and "woke from zero" in e["message"]
        ],
        timeout=15,
        what="a Scaled event that says it woke from zero",
    )


async def test_prometheus_stopped_holds_replicas(cluster: Cluster) -> None:
    replicas = cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"]
    cluster.workers.update((NS, "tiny", "interactive"), rps=0.0, ttft_s=0.01, waiting=0.0, running=0.0)
    cluster.prom.stop()
    condition = await eventually(
        lambda: (c := cluster.condition("tiny", "MetricsAvailable")) and c["status"] == "False" and c,
        what="MetricsAvailable=False",
    )
    assert condition["reason"] == "PrometheusUnavailable"
    await asyncio.sleep(8)  # longer than the policy's scale-down stabilization
    assert cluster.get("apps/v1/deployments", NS, "tiny-interactive")["spec"]["replicas"] == replicas
    assert cluster.condition("tiny", "MetricsAvailable")["status"] == "False"
