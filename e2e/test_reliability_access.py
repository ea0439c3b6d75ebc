"""Least privilege on the real API server: what the operator's ServiceAccount may and may not do under the
shipped RBAC, Pod Security Admission (`restricted`) on the operator and worker pods, and the worker's API key
wired from a Secret end to end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import pytest
import yaml
from kubernetes.client import (
    AppsV1Api,
    AuthorizationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)

from e2e import procs
from e2e.stack import REPO, Stack
from goodput.controllers import builders, naming
from goodput.controllers.builders import Owner
from goodput.crds.common import GROUP, VERSION
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.policies.types import Candidate, Tier, TierConfig

pytestmark = pytest.mark.e2e

MANIFESTS = REPO / "manifests"
OPERATOR_NS, OPERATOR_SA = "goodput-system", "goodput-operator"


def kubectl_ok(cluster: Stack, *args: str) -> None:
    result = cluster.kubectl(*args)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def operator_client(cluster: Stack) -> Iterator[kubernetes.client.ApiClient]:
    """A client holding the operator ServiceAccount's token, with only the shipped RBAC (and spec guard)."""
    kubectl_ok(cluster, "apply", "--server-side", "-f", str(MANIFESTS / "crds"))
    kubectl_ok(cluster, "wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    for path in ("operator/namespace.yaml", "rbac", "default-slopolicy.yaml"):
        kubectl_ok(cluster, "apply", "--server-side", "-f", str(MANIFESTS / path))
    kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, hours=1)
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
        yield client


@pytest.fixture
def namespace(
    k8s: kubernetes.client.ApiClient, operator_client: kubernetes.client.ApiClient
) -> Iterator[str]:
    """A namespace under the `restricted` Pod Security Standard, with a Secret and an InferenceService
    (after `operator_client` installed the CRDs)."""
    name = f"access-{uuid.uuid4().hex[:6]}"
    core = CoreV1Api(k8s)
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    core.create_namespaced_secret(name, {"metadata": {"name": "keys"}, "stringData": {"api-key": "s3cret"}})
    service = yaml.safe_load((MANIFESTS / "examples" / "tiny-cpu.yaml").read_text())
    service["metadata"] = {"name": "tiny", "namespace": name}
    CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, name, "inferenceservices", service)
    yield name
    core.delete_namespace(name)


def denied(call: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except kubernetes.client.ApiException as error:
        return error.status == 403
    return False


def test_operator_identity_is_denied_what_it_has_no_business_with(
    operator_client: kubernetes.client.ApiClient, namespace: str, record_property: Any
) -> None:
    core, rbac = CoreV1Api(operator_client), RbacAuthorizationV1Api(operator_client)
    custom, apps = CustomObjectsApi(operator_client), AppsV1Api(operator_client)
    role = {"metadata": {"name": "x"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    binding = {
        "metadata": {"name": "x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
    }
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
    service_path = (GROUP, VERSION, namespace, "inferenceservices", "tiny")
    attempts = {
        "read a Secret": lambda: core.read_namespaced_secret("keys", namespace),
        "list Secrets": lambda: core.list_secret_for_all_namespaces(),
        "create a Pod": lambda: core.create_namespaced_pod(namespace, pod),
        # It may list pods (to report why workers do not start), never change them or read their logs.
        "delete a Pod": lambda: core.delete_namespaced_pod("x", namespace),
        "read a Pod's log": lambda: core.read_namespaced_pod_log("x", namespace),
        "delete a Node": lambda: core.delete_node("goodput-node"),
        "delete a Namespace": lambda: core.delete_namespace(namespace),
        "create a ClusterRole": lambda: rbac.create_cluster_role(role),
        "bind cluster-admin": lambda: rbac.create_cluster_role_binding(binding),
        "mint a token": lambda: core.create_namespaced_service_account_token(
            "default", namespace, {"spec": {"expirationSeconds": 600}}
        ),
        "replace an InferenceService": lambda: custom.replace_namespaced_custom_object(
            *service_path, custom.get_namespaced_custom_object(*service_path)
        ),
        "delete an InferenceService": lambda: custom.delete_namespaced_custom_object(*service_path),
        "create an InferenceService": lambda: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservices", {"metadata": {"name": "y"}}
        ),
        "delete an SLOPolicy": lambda: custom.delete_cluster_custom_object(
            GROUP, VERSION, "slopolicies", "x"
        ),
        "list ConfigMaps (may read what others store)": lambda: core.list_namespaced_config_map(namespace),
        "delete a ConfigMap": lambda: core.delete_namespaced_config_map("kube-root-ca.crt", namespace),
        "list ReplicaSets": lambda: apps.list_namespaced_replica_set(namespace),
    }
    allowed = [what for what, attempt in attempts.items() if not denied(attempt)]
    assert allowed == [], f"the operator's ServiceAccount may {allowed}"
    record_property("access", {"forbidden_operations_tried": len(attempts), "denied_403": len(attempts)})


def can(operator_client: kubernetes.client.ApiClient, verb: str, group: str, resource: str, ns: str) -> bool:
    resource, _, sub = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": resource, "subresource": sub, "namespace": ns}
    review = {"spec": {"resourceAttributes": attributes}}
    return AuthorizationV1Api(operator_client).create_self_subject_access_review(review).status.allowed


NEEDED = [
    ("get", "goodput.dev", "inferenceservices"),
    ("list", "goodput.dev", "inferenceservices"),
    ("watch", "goodput.dev", "inferenceservices"),
    ("patch", "goodput.dev", "inferenceservices"),
    ("patch", "goodput.dev", "inferenceservices/status"),
    ("watch", "goodput.dev", "slopolicies"),
    ("patch", "goodput.dev", "slopolicies/status"),
    ("create", "apps", "deployments"),
    ("patch", "apps", "deployments"),
    ("delete", "apps", "deployments"),
    ("watch", "apps", "deployments"),
    ("create", "", "services"),
    ("patch", "", "configmaps"),
    ("create", "policy", "poddisruptionbudgets"),
    ("create", "", "events"),
]


def test_operator_identity_can_do_its_job(
    operator_client: kubernetes.client.ApiClient, namespace: str, record_property: Any
) -> None:
    missing = [(v, g, r) for v, g, r in NEEDED if not can(operator_client, v, g, r, namespace)]
    assert missing == []
    record_property("access", {"needed_permissions_checked": len(NEEDED), "allowed": len(NEEDED)})
    # And for real: a status write, and a server-side apply of a child (dry run).
    custom = CustomObjectsApi(operator_client)
    status = {"status": {"conditions": []}}
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "inferenceservices", "tiny", status
    )
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    CoreV1Api(operator_client).patch_namespaced_config_map(
        "c",
        namespace,
        config_map,
        field_manager="goodput",
        dry_run="All",
        _content_type="application/apply-patch+yaml",
    )


def test_operator_identity_cannot_change_a_spec(
    operator_client: kubernetes.client.ApiClient, namespace: str, record_property: Any
) -> None:
    """RBAC lets it patch InferenceServices (Kopf's annotations); the shipped admission policy keeps specs out
    of reach, while metadata and status writes still go through."""
    custom = CustomObjectsApi(operator_client)
    path = (GROUP, VERSION, namespace, "inferenceservices", "tiny")
    edit = {"spec": {"scaling": {"maxReplicas": 1}}}

    def refused() -> bool:  # effective once the API server has loaded the policy; a dry run changes nothing
        try:
            custom.patch_namespaced_custom_object(*path, edit, dry_run="All")
        except kubernetes.client.ApiException as error:
            assert error.status in (403, 422), error.body
            assert "may not change a spec" in error.body, error.body
            return True
        return False

    procs.wait_until(refused, 30, "the spec guard to refuse a spec patch", interval=0.5)
    with pytest.raises(kubernetes.client.ApiException):
        custom.patch_namespaced_custom_object(*path, edit)
    custom.patch_namespaced_custom_object(*path, {"metadata": {"annotations": {"kopf.zalando.org/x": "1"}}})
    custom.patch_namespaced_custom_object_status(*path, {"status": {"replicas": 0}})
    policy = GROUP, VERSION, "slopolicies"
    with pytest.raises(kubernetes.client.ApiException) as denied_policy:
        custom.patch_cluster_custom_object(*policy, "default", {"spec": {"headroom": 0.5}})
    assert "may not change a spec" in denied_policy.value.body
    record_property("access", {"spec_patches_refused": 2, "metadata_and_status_patches_allowed": 2})


def test_shipped_rbac_has_no_wildcard_or_escalation(cluster: Stack) -> None:
    """Checked on what the API server holds, not on the file: its aggregated, stored ClusterRole."""
    with cluster.api_client() as client:
        role = RbacAuthorizationV1Api(client).read_cluster_role(OPERATOR_SA)
    risky = {"*", "escalate", "bind", "impersonate", "secrets", "pods/exec", "serviceaccounts/token", "nodes"}
    for rule in role.rules:
        assert not risky & {*rule.verbs, *rule.resources, *(rule.api_groups or [])}, rule
        assert not rule.non_resource_urls


def worker_deployment(namespace: str) -> list[dict[str, Any]]:
    """The ConfigMap, Deployment and Service the operator builds for tiny-cpu with an API key Secret (owner refs
    dropped: here they are created by hand, not by the operator)."""
    service = yaml.safe_load((MANIFESTS / "examples" / "tiny-cpu.yaml").read_text())
    service["spec"]["worker"] = {"apiKeySecret": {"name": "keys", "key": "api-key"}}
    spec = InferenceServiceSpec.model_validate(service["spec"])
    tier = TierConfig(Tier.INTERACTIVE, 1, 4, 2.0)
    plan = Candidate("CPU", 1, 1, 4, 2.0, 256, "interactive", (tier,), 100.0, 10.0, 0.05, 0.5)
    owner = Owner("tiny", namespace, str(uuid.uuid4()))
    children = [c for c in builders.build_children(owner, spec, plan) if c["kind"] != "PodDisruptionBudget"]
    for child in children:
        child["metadata"].pop("ownerReferences")
    return children


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = dict(deployment["spec"]["template"]["spec"])
    spec.pop("serviceAccountName", None)  # it lives in goodput-system; only the security context matters here
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}


def operator_pod() -> dict[str, Any]:
    deployment = yaml.safe_load((MANIFESTS / "operator" / "deployment.yaml").read_text())
    return pod_of(deployment)


@pytest.mark.parametrize("which", ["operator", "worker"])
def test_pods_pass_the_restricted_pod_security_standard(
    k8s: kubernetes.client.ApiClient, namespace: str, which: str, record_property: Any
) -> None:
    core = CoreV1Api(k8s)
    pod = operator_pod() if which == "operator" else pod_of(worker_deployment(namespace)[1])
    for container in pod["spec"]["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True  # not part of PSS: ours
    core.create_namespaced_pod(namespace, pod, dry_run="All")  # admitted under enforce=restricted
    # The admission check is live: the same pod with escalation allowed is refused, naming the field.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert refused.value.status == 403 and "allowPrivilegeEscalation" in refused.value.body
    record_property(
        "access", {"pod": which, "admitted_under_restricted": True, "escalating_copy_refused": True}
    )


@pytest.mark.slow
def test_worker_requires_the_api_key_from_its_secret(
    k8s: kubernetes.client.ApiClient, cluster: Stack, namespace: str
) -> None:
    """The Deployment the builders produce, run by the node under `restricted`: 401 without the
    Secret's key, 200 with it."""
    config_map, deployment, service = worker_deployment(namespace)
    core = CoreV1Api(k8s)
    core.create_namespaced_config_map(namespace, config_map)
    core.create_namespaced_service(namespace, service)
    AppsV1Api(k8s).create_namespaced_deployment(namespace, deployment)
    name = naming.tier_name("tiny", "interactive")
    procs.wait_until(
        lambda: bool(cluster.service_endpoints(namespace, name)), 120, "a Ready worker", interval=1
    )
    url = f"http://{cluster.service_endpoints(namespace, name)[0]}/v1/completions"
    body = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    assert (
        httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    )
    ok = httpx.post(url, json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)
    assert ok.status_code == 200, ok.text
