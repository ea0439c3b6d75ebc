"""Pure builders of one InferenceService's router: its Deployment, the Service named after the InferenceService
(the one endpoint clients use), a PDB, and the service account with the read-only EndpointSlice access its
watch needs.

The router pods carry their own labels (not `goodput.dev/inferenceservice`), so the workers' PDB and the
worker queries never count them. They run under the same restricted pod security as the workers.
"""

from __future__ import annotations

import json
from typing import Any

from goodput.controllers import naming
from goodput.controllers.builders import (
    PRESTOP_SECONDS,
    Owner,
    _container_security,
    _metadata,
    _pod_security,
    _probe,
)
from goodput.crds.inferenceservice import InferenceServiceSpec, QuotaLimits, RouterSpec, TrafficClass
from goodput.policies.prefill_bound import tier_prefill_bounds
from goodput.policies.types import Candidate
from goodput.worker_image.contract import POD_LABEL_ROUTER

ROUTER_APP = "goodput-router"
LABEL_ROUTER = POD_LABEL_ROUTER
ROUTER_PORT = 8080
SERVICE_PORT = 80
DRAIN_SECONDS = 20  # on SIGTERM the router stops accepting and lets streams in flight finish this long
TIERS = ("interactive", "batch")


def router_name(service: str) -> str:
    return naming.fit(f"{service}-router")


def router_selector(service: str) -> dict[str, str]:
    return {LABEL_ROUTER: service}


def router_labels(service: str) -> dict[str, str]:
    return {
        naming.LABEL_NAME: ROUTER_APP,
        naming.LABEL_INSTANCE: service,
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        LABEL_ROUTER: service,
    }


def endpoint(name: str, namespace: str) -> str:
    """What status shows: the Service named after the InferenceService."""
    return f"http://{name}.{namespace}.svc:{SERVICE_PORT}"


def _quota(limits: QuotaLimits) -> dict[str, Any]:
    return limits.model_dump(by_alias=True, exclude_none=True, exclude={"name"})


def quotas_json(router: RouterSpec) -> str:
    """The router's --quotas-json: {default: QUOTA, tenants: {NAME: QUOTA}}, camelCase as in the manifest."""
    data: dict[str, Any] = {"tenants": {t.name: _quota(t) for t in router.tenant_quotas}}
    if router.default_quota is not None:
        data["default"] = _quota(router.default_quota)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def router_args(owner: Owner, spec: InferenceServiceSpec, router: RouterSpec, plan: Candidate) -> list[str]:
    """Both tiers' Services are watched whatever the plan (a tier without endpoints is skipped by the router);
    each planned tier's max batch and prefill bound (policies/prefill_bound.py) bound its replicas, so only a
    change of max batch, accelerator, TP or TTFT target rolls the router."""
    default_class = "batch" if spec.traffic.traffic_class == TrafficClass.BATCH else "interactive"
    args = ["--host", "0.0.0.0", "--port", str(ROUTER_PORT), "--namespace", owner.namespace]
    for tier in TIERS:
        args += ["--service", f"{tier}={naming.tier_name(owner.name, tier)}"]
    for tier_config in plan.tiers:
        args += ["--max-requests-per-replica", f"{tier_config.tier}={tier_config.max_batch}"]
    for tier, tokens in tier_prefill_bounds(spec, plan).items():
        args += ["--max-prefill-tokens-per-replica", f"{tier}={tokens}"]
    args += ["--default-class", default_class, "--max-queue", str(router.max_queue)]
    args += ["--max-wait-s", f"{router.max_wait_seconds:g}", "--drain-s", str(DRAIN_SECONDS)]
    # each router pod gets an even share of the tenants' traffic from the Service, and enforces that share
    args += ["--quotas-json", quotas_json(router), "--quota-routers", str(router.replicas)]
    return args


def build_router_deployment(
    owner: Owner, spec: InferenceServiceSpec, router: RouterSpec, plan: Candidate
) -> dict[str, Any]:
    name = router_name(owner.name)
    env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}]
    secret = spec.worker.api_key_secret
    if secret is not None:  # the same Secret as the workers: the router answers 401 before routing
        env.append(
            {
                "name": "GOODPUT_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            }
        )
    container = {
        "name": "router",
        "image": router.image,
        "command": ["python", "-m", "goodput.router"],
        "args": router_args(owner, spec, router, plan),
        "env": env,
        "ports": [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/ready", period=5, failures=2),
        "lifecycle": {
            "preStop": {"exec": {"command": ["python", "-c", f"import time; time.sleep({PRESTOP_SECONDS})"]}}
        },
        "livenessProbe": _probe("/health", period=10, failures=3),
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    labels = router_labels(owner.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "replicas": router.replicas,
            "selector": {"matchLabels": router_selector(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        **naming.scrape_annotations(ROUTER_PORT),
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,  # the EndpointSlice watch
                    "enableServiceLinks": False,
                    "containers": [container],
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": PRESTOP_SECONDS + DRAIN_SECONDS + 5,
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def build_router_service(owner: Owner) -> dict[str, Any]:
    """Named after the InferenceService: `<name>.<namespace>.svc` is the service's endpoint."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, router_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": router_selector(owner.name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_router_pdb(owner: Owner) -> dict[str, Any]:
    """One router pod stays up through voluntary disruptions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, router_name(owner.name), router_labels(owner.name)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": router_selector(owner.name)}},
    }


def build_router_access(owner: Owner) -> list[dict[str, Any]]:
    """A service account that may read EndpointSlices in the service's namespace, and nothing else."""
    name, labels = router_name(owner.name), router_labels(owner.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(owner, name, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(owner, name, labels),
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(owner, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def build_router_children(owner: Owner, spec: InferenceServiceSpec, plan: Candidate) -> list[dict[str, Any]]:
    """The router's objects, access first (the pods need their service account); none without spec.router."""
    if spec.router is None:
        return []
    return [
        *build_router_access(owner),
        build_router_deployment(owner, spec, spec.router, plan),
        build_router_service(owner),
        build_router_pdb(owner),
    ]
