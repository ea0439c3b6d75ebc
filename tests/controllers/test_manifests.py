"""The kustomize base: least-privilege RBAC that still covers every write the operator makes, a hardened pod."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from goodput.controllers import kube

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _load(relative: str) -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / relative).read_text())


def _rules() -> list[dict[str, Any]]:
    return _load("rbac/cluster-role.yaml")["rules"]


def _allowed(group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in _rules()
    )


def test_no_wildcards_and_no_secrets() -> None:
    for rule in _rules():
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"]
        if "pods" in rule["resources"]:  # read only, to say why workers are not ready
            assert rule["verbs"] == ["list"] and rule["resources"] == ["pods"]


@pytest.mark.parametrize(
    ("kind", "verbs"),
    [
        ("ConfigMap", ["create", "patch"]),  # server-side apply creates or patches
        ("Deployment", ["create", "patch", "list", "watch", "delete"]),  # + the ready index and pruning
        ("Service", ["create", "patch", "delete"]),
        ("PodDisruptionBudget", ["create", "patch"]),
        ("ServiceAccount", ["create", "patch"]),  # the router's (spec.router)
        ("Role", ["create", "patch"]),
        ("RoleBinding", ["create", "patch"]),
        ("Event", ["create"]),
        ("Pod", ["list"]),  # only when a tier is not ready: the containers' own reasons
        ("InferenceService", ["get", "list", "watch", "patch"]),  # patch: Kopf's annotations only
        ("SLOPolicy", ["get", "list", "watch"]),
    ],
)
def test_rbac_covers_what_the_operator_does(kind: str, verbs: list[str]) -> None:
    prefix, plural, _ = kube.KINDS[kind]
    group = "" if prefix == "/api/v1" else prefix.split("/")[2]
    for verb in verbs:
        assert _allowed(group, plural, verb), f"{verb} {plural}"
    assert _allowed("goodput.dev", "inferenceservices/status", "patch")
    assert _allowed("goodput.dev", "slopolicies/status", "patch")


def test_the_operator_pod_is_restricted() -> None:
    deployment = _load("operator/deployment.yaml")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_base_lists_existing_files_and_a_valid_default_policy() -> None:
    base = _load("kustomization.yaml")
    for resource in base["resources"]:
        assert (MANIFESTS / resource).is_file(), resource
    from goodput.crds.validation import validate_manifest

    assert validate_manifest(_load("default-slopolicy.yaml")) == []


def test_the_default_policy_spells_out_every_field_at_its_default() -> None:
    """On-call reads the default policy's knobs in this file, and the API server stores it as written."""
    from goodput.crds.slopolicy import SLOPolicySpec

    spec = _load("default-slopolicy.yaml")["spec"]
    defaults = SLOPolicySpec().model_dump(by_alias=True, mode="json")
    assert set(spec) == set(defaults)
    assert SLOPolicySpec.model_validate(spec) == SLOPolicySpec()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (kustomize)")
def test_kustomize_builds_the_base() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    )
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout)]
    assert kinds.count("CustomResourceDefinition") == 2
    for kind in (
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
        "Deployment",
        "SLOPolicy",
        "Namespace",
    ):
        assert kind in kinds
