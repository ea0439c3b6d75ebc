"""The operator's router children: tables of the built objects, and the arguments the router itself parses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from goodput.controllers import builders, naming
from goodput.controllers.router_builders import build_router_children, endpoint
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.policies.prefill_bound import tier_prefill_bounds
from goodput.router.__main__ import build
from goodput.router.config import parse_args
from goodput.router.quota import QuotaSpec
from testkit.specs import make_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "tiny-cpu.yaml"
OWNER = builders.Owner(name="tiny", namespace="team-a", uid="u-1")
PLAN = make_plan(tiers=(("interactive", 1, 8, 3.0),))  # max batch 8: the router's bound per replica
ROUTER = {
    "defaultQuota": {"tokensPerSecond": 1000, "maxConcurrentRequests": 8},
    "tenantQuotas": [{"name": "search", "tokensPerSecond": 50000, "burstTokens": 100000}],
    "maxWaitSeconds": 30,
}


def spec_with(router: dict[str, Any] | None, **overrides: Any) -> InferenceServiceSpec:
    raw = yaml.safe_load(EXAMPLE.read_text())["spec"]
    if router is not None:
        raw["router"] = router
    raw.update(overrides)
    return InferenceServiceSpec.model_validate(raw)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_no_router_without_spec_router() -> None:
    assert build_router_children(OWNER, spec_with(None), PLAN) == []


def test_router_children() -> None:
    children = build_router_children(OWNER, spec_with(ROUTER), PLAN)
    assert [c["kind"] for c in children] == [
        "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
    ]  # fmt: skip
    kinds = by_kind(children)
    for child in children:
        assert child["metadata"]["namespace"] == "team-a"
        assert child["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    service = kinds["Service"]
    assert service["metadata"]["name"] == "tiny"  # the endpoint is named after the InferenceService
    assert endpoint("tiny", "team-a") == "http://tiny.team-a.svc:80"
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": service["spec"]["selector"]},
    }
    # the workers' PDB must not count router pods
    worker_pdb = builders.build_pdb(OWNER)["spec"]["selector"]["matchLabels"]
    assert not worker_pdb.items() <= pod_labels.items()
    assert naming.LABEL_SERVICE not in pod_labels
    assert kinds["Role"]["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == kinds["ServiceAccount"]["metadata"]["name"]
    )


def test_router_runs_under_the_workers_pod_security() -> None:
    spec = spec_with(ROUTER)
    plan_children = builders.build_children(OWNER, spec, PLAN)
    worker = next(c for c in plan_children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    router = by_kind(build_router_children(OWNER, spec, PLAN))["Deployment"]["spec"]["template"]["spec"]
    assert router["securityContext"] == worker["securityContext"]
    assert router["containers"][0]["securityContext"] == worker["containers"][0]["securityContext"]


def test_router_args_parse_and_carry_quotas_and_the_api_key_secret() -> None:
    spec = spec_with(ROUTER, worker={"apiKeySecret": {"name": "tiny-key", "key": "token"}})
    container = by_kind(build_router_children(OWNER, spec, PLAN))["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["python", "-m", "goodput.router"]
    config = parse_args(container["args"])
    assert config.namespace == "team-a"
    assert config.services == {"interactive": "tiny-interactive", "batch": "tiny-batch"}
    assert config.default_class == "interactive"
    assert config.limits.max_wait_s == 30
    assert config.max_requests == {"interactive": 8}  # the planned tier's max batch
    # and its prefill bound, from the TTFT target and the replica's prefill speed
    assert config.max_prefill_tokens == tier_prefill_bounds(spec, PLAN)
    assert (
        build(config).tiers["interactive"].policy.max_prefill_tokens
        == config.max_prefill_tokens["interactive"]
    )
    grace = by_kind(build_router_children(OWNER, spec, PLAN))["Deployment"]["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > config.drain_s  # SIGKILL never cuts the drain short
    # each of the two router pods enforces half of every quota
    assert config.quotas.default == QuotaSpec(tokens_per_s=500, max_concurrent=4)
    assert config.quotas.tenants == {"search": QuotaSpec(tokens_per_s=25000, burst_tokens=50000)}
    assert {
        "name": "GOODPUT_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "tiny-key", "key": "token"}},
    } in container["env"]


def test_batch_service_defaults_to_the_batch_class() -> None:
    traffic = {"class": "batch", "expectedRps": 2}
    container = by_kind(build_router_children(OWNER, spec_with(ROUTER, traffic=traffic), PLAN))["Deployment"]
    assert parse_args(container["spec"]["template"]["spec"]["containers"][0]["args"]).default_class == "batch"


@pytest.mark.parametrize(
    "router",
    [
        {"replicas": 1},
        {"tenantQuotas": [{"name": "a", "tokensPerSecond": 0}]},
        {"defaultQuota": {"maxConcurrentRequests": 0}},
        {"defaultQuota": {"tokensPerSecnd": 5}},
    ],
)
def test_bad_router_specs_are_rejected(router: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec_with(router)
