"""The on-call CLI and the install overlays on the real local stack.

`goodput status` and `goodput explain` run as the console script against the session's API server and
Prometheus, while the operator (installed from manifests/, run by the node from its image) serves the tiny CPU
example; their JSON is compared with the API objects read just before and just after, so a status the
operator rewrites in between cannot make the comparison pass or fail by luck. The dev and prod overlays are
applied as a user would on a fresh control plane of their own: their cluster-scoped objects (CRB, SLOPolicy
`default`) would otherwise repoint the session's install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from e2e import operator as goodput
from e2e import procs, service
from e2e.stack import REPO, Stack, leftovers, running_stack
from goodput.controllers import oncall
from goodput.controllers.status import state_from_status
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.crds.validation import validate_manifest
from goodput.policies import planner

pytestmark = pytest.mark.e2e

GOODPUT = Path(sys.executable).with_name("goodput")  # the console script, as users run it
POLICY = service.FastPolicy()
SLO = {"ttftP95Ms": 1500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}
OVERLAYS = REPO / "manifests" / "overlays"


def goodput_cli(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(GOODPUT), *args, f"--kubeconfig={stack.kubeconfig}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def tiny(cluster: Stack) -> Iterator[tuple[str, str]]:
    """goodput installed from manifests/ and the tiny CPU example Ready in a namespace of its own."""
    goodput.install(cluster)
    goodput.wait_ready(cluster)
    service.apply(cluster, POLICY.manifest())
    namespace = f"oncall-{uuid.uuid4().hex[:6]}"
    with cluster.api_client() as client:
        CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
    try:
        service.apply(cluster, service.tiny_service(namespace, POLICY.name, SLO))
        service.wait_ready(cluster, namespace, "tiny")
        yield namespace, "tiny"
    finally:
        with cluster.api_client() as client:
            CoreV1Api(client).delete_namespace(namespace)
        goodput.uninstall(cluster)


def cluster_state(stack: Stack, namespace: str) -> dict[str, Any]:
    """Every InferenceService and tier Deployment of the namespace, with their resourceVersions."""
    with stack.api_client() as client:
        services = CustomObjectsApi(client).list_namespaced_custom_object(
            "goodput.dev", "v1alpha1", namespace, "inferenceservices"
        )["items"]
        deployments = (
            AppsV1Api(client).list_namespaced_deployment(namespace, label_selector=oncall.LABEL_SERVICE).items
        )
    return {
        "services": {o["metadata"]["name"]: o for o in services},
        "deployments": {d.metadata.name: d for d in deployments},
        "versions": sorted(
            [o["metadata"]["resourceVersion"] for o in services]
            + [d.metadata.resource_version for d in deployments]
        ),
    }


def consistent(stack: Stack, namespace: str, run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """`run()`'s result with the cluster state it saw: retried until nothing changed while it ran."""
    for _ in range(10):
        before = cluster_state(stack, namespace)
        result = run()
        if cluster_state(stack, namespace)["versions"] == before["versions"]:
            return result, before
    raise AssertionError("the cluster kept changing while the CLI ran")


def test_status_shows_what_the_operator_wrote(cluster: Stack, tiny: tuple[str, str]) -> None:
    namespace, name = tiny

    def status() -> list[dict[str, Any]]:
        result = goodput_cli(cluster, "status", "-n", namespace, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    rows, state = consistent(cluster, namespace, status)
    (row,) = rows
    obj = state["services"][name]
    assert (row["namespace"], row["name"], row["resourceVersion"]) == (
        namespace,
        name,
        obj["metadata"]["resourceVersion"],
    )
    assert row["slo"] == obj["spec"]["slo"] and row["plan"] == obj["status"]["plan"]
    assert row["lastDecision"] == obj["status"].get("lastDecision")
    assert row["conditions"] == {
        c["type"]: {"status": c["status"], "reason": c["reason"], "message": c.get("message", "")}
        for c in obj["status"]["conditions"]
    }
    assert row["conditions"]["Ready"]["status"] == "True"
    assert row["observed"] == (
        None if "observed" not in obj["status"] else {"source": "status", **obj["status"]["observed"]}
    )
    assert row["tiers"] == [
        {
            "tier": d.metadata.labels[oncall.LABEL_TIER],
            "deployment": d.metadata.name,
            "desired": d.spec.replicas,
            "ready": d.status.ready_replicas or 0,
        }
        for d in state["deployments"].values()
    ]
    assert sum(t["desired"] for t in row["tiers"]) == obj["status"]["plan"]["replicas"]

    table = goodput_cli(cluster, "status", "-A")
    assert table.returncode == 0 and name in table.stdout and namespace in table.stdout


def test_status_reads_the_workers_series_from_prometheus(cluster: Stack, tiny: tuple[str, str]) -> None:
    """With --prometheus, the p95s come from the operator's queries on the real Prometheus (once the
    workers have been scraped)."""
    namespace, name = tiny
    assert cluster.prometheus_url
    seen: dict[str, Any] = {}

    def from_prometheus() -> bool:
        result = goodput_cli(
            cluster, "status", "-n", namespace, "--json", "--prometheus", cluster.prometheus_url
        )
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
        seen.update(json.loads(result.stdout)[0]["observed"] or {})
        return seen.get("source") == "prometheus"

    procs.wait_until(from_prometheus, 60, f"{name}'s series in Prometheus", interval=2.0)
    assert seen["rps"] >= 0 and seen["windowSeconds"] == 60


def test_explain_replans_from_the_cluster_state(cluster: Stack, tiny: tuple[str, str]) -> None:
    namespace, name = tiny

    def explain() -> dict[str, Any]:
        result = goodput_cli(cluster, "explain", name, "-n", namespace, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    report, state = consistent(cluster, namespace, explain)
    obj = state["services"][name]
    status = obj["status"]
    assert report["running"] == status["plan"]
    calibration = status.get("calibration") or {}
    assert report["calibration"]["ttftFactor"] == calibration.get("ttftFactor", 1.0)
    assert report["calibration"]["tpotFactor"] == calibration.get("tpotFactor", 1.0)
    assert report["policy"]["source"] == f"SLOPolicy {POLICY.name}"
    assert report["policy"]["evaluationIntervalSeconds"] == POLICY.evaluation_interval_s
    # The same planner call, from the objects as the API serves them.
    spec = InferenceServiceSpec.model_validate(obj["spec"])
    observed = {"source": "status", **status["observed"]} if "observed" in status else None
    cached = state_from_status(status).cached_prompt_fraction
    load, _ = oncall.observed_load(spec, observed, None, cached)
    assert report["load"]["rps"] == load.rps
    policy = SLOPolicySpec.model_validate(POLICY.manifest()["spec"])
    expected = planner.plan(
        spec, load, policy, report["calibration"]["ttftFactor"], report["calibration"]["tpotFactor"]
    )
    assert expected.chosen is not None
    assert (report["plan"]["accelerator"], report["plan"]["replicas"], report["plan"]["maxBatch"]) == (
        expected.chosen.accelerator,
        expected.chosen.replicas,
        expected.chosen.max_batch,
    )
    with cluster.api_client() as client:
        posted = (
            CoreV1Api(client)
            .list_namespaced_event(
                namespace, field_selector=f"involvedObject.kind=InferenceService,involvedObject.name={name}"
            )
            .items
        )
    assert report["events"] and len(report["events"]) == min(len(posted), 5)  # the newest five
    if len(posted) <= 5:
        assert "Planned" in [e["reason"] for e in report["events"]]  # the operator's first decision
    assert {(e["reason"], e["message"]) for e in report["events"]} <= {(e.reason, e.message) for e in posted}
    assert report["replicaRange"]["basis"] == "the running plan (status.plan)"
    assert report["frontier"]["rows"]

    table = goodput_cli(cluster, "explain", name, "-n", namespace)
    assert table.returncode == 0 and "Calibration" in table.stdout and "what-if" in table.stdout


def test_cli_errors_are_one_line(cluster: Stack, tiny: tuple[str, str]) -> None:
    namespace, _ = tiny
    missing = goodput_cli(cluster, "explain", "nope", "-n", namespace)
    assert missing.returncode == oncall.EXIT_NOT_FOUND
    assert (
        missing.stderr
        == f"error: InferenceService nope not found in namespace {namespace} (kubectl get gpsvc -A)\n"
    )
    # A ServiceAccount without RBAC on goodput.dev: the API server's 403, said plainly.
    config = cluster.service_account_kubeconfig(namespace, "default")
    forbidden = subprocess.run(
        [str(GOODPUT), "status", "-n", namespace, f"--kubeconfig={config}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forbidden.returncode == oncall.EXIT_UNREACHABLE
    assert forbidden.stderr.startswith(f"error: list InferenceServices: 403 Forbidden from {cluster.server}")
    assert "Traceback" not in forbidden.stderr


# ---------------------------------------------------------------- overlays


def kustomize(stack: Stack, overlay: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(goodput.kubectl(stack, "kustomize", str(OVERLAYS / overlay))))


def test_prod_keeps_the_base_default_policy() -> None:
    base = yaml.safe_load((REPO / "manifests" / "default-slopolicy.yaml").read_text())
    prod = yaml.safe_load((OVERLAYS / "prod" / "default-slopolicy.yaml").read_text())
    assert prod == base
    dev = yaml.safe_load((OVERLAYS / "dev" / "default-slopolicy.yaml").read_text())
    assert validate_manifest(dev) == [] and dev["metadata"]["name"] == "default"


@pytest.mark.parametrize("overlay, namespace", [("dev", "goodput-dev"), ("prod", "goodput-system")])
def test_overlay_installs_on_a_fresh_control_plane(overlay: str, namespace: str) -> None:
    """As the README says: CRDs first, then the overlay (server-side dry run, then apply)."""
    with running_stack(node=False, with_prometheus=False) as stack:
        objects = kustomize(stack, overlay)
        goodput.kubectl(stack, "apply", "--server-side", "-k", str(REPO / "manifests" / "crds"))
        goodput.kubectl(stack, "wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
        (ns,) = [o for o in objects if o["kind"] == "Namespace"]
        goodput.kubectl(stack, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(ns))
        dry = goodput.kubectl(
            stack, "apply", "--server-side", "--dry-run=server", "-k", str(OVERLAYS / overlay)
        )
        assert dry.count("(server dry run)") == len(objects)
        goodput.kubectl(stack, "apply", "--server-side", "-k", str(OVERLAYS / overlay))
        check_install(stack, overlay, namespace)
    assert leftovers(stack) == []


def check_install(stack: Stack, overlay: str, namespace: str) -> None:
    identity = f"system:serviceaccount:{namespace}:goodput-operator"
    allowed = goodput.kubectl(
        stack, "auth", "can-i", "patch", "inferenceservices.goodput.dev/status", f"--as={identity}"
    )
    assert allowed.strip() == "yes"
    with stack.api_client() as client:
        deployment = AppsV1Api(client).read_namespaced_deployment("goodput-operator", namespace)
        policy = CustomObjectsApi(client).get_cluster_custom_object(
            "goodput.dev", "v1alpha1", "slopolicies", "default"
        )
        pod_spec = deployment.spec.template.spec
        (container,) = pod_spec.containers
        env = {e.name: e.value for e in container.env}
        assert deployment.metadata.labels["goodput.dev/environment"] == overlay
        if overlay == "dev":
            assert "--debug" in container.command and f"--namespace={namespace}" in container.command
            assert env["GOODPUT_OPERATOR_NAMESPACES"] == namespace
            assert container.resources.requests == {"cpu": "50m", "memory": "128Mi"}
            assert policy["spec"]["scaleDownStabilizationSeconds"] == 60
        else:
            assert container.image == "ghcr.io/goodput/operator:0.1.0"
            assert container.resources.limits == {"cpu": "1", "memory": "1Gi"}
            assert pod_spec.priority_class_name == "goodput-operator"
            base = yaml.safe_load((REPO / "manifests" / "default-slopolicy.yaml").read_text())
            assert policy["spec"] == base["spec"]

            def pod_priority() -> int | None:
                pods = CoreV1Api(client).list_namespaced_pod(namespace).items
                return pods[0].spec.priority if pods else None

            # The controller manager creates the pod; admission resolves the PriorityClass into its priority.
            procs.wait_until(lambda: pod_priority() is not None, 30, "the operator pod", interval=0.5)
            assert pod_priority() == 1_000_000
