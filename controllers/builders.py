"""Pure builders of the children of one InferenceService: ConfigMap, a Deployment and a Service per tier, a PDB.

Each returns the full object the operator means to own, for server-side apply: applying the same plan twice
yields the same bytes, so reconciling is idempotent. No I/O here; tests compare the output as tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from goodput.controllers import naming
from goodput.crds.common import API_VERSION
from goodput.crds.inferenceservice import KIND, AcceleratorPool, AcceleratorType, InferenceServiceSpec
from goodput.policies.types import Candidate, TierConfig
from goodput.worker_image.contract import env_name, flag

GPU_RESOURCE = "nvidia.com/gpu"
PRESTOP_SECONDS = 5  # lets endpoints drop the pod before SIGTERM starts the drain
DRAIN_SECONDS = {"interactive": 30, "batch": 120}  # batch requests run longer, give them longer to finish
CPU_PER_GPU = 4
# The CPU pool is for local runs and tests, on nodes of a few cores. The catalog's CPU capacity is fitted to the
# worker on one core, so each rank is limited to one core (torch's threads follow the cgroup quota); it requests
# a quarter of it, so that a two-core node holds several replicas beside the operator.
CPU_WORKER_CORES = 1
CPU_WORKER_REQUEST_MILLICORES = 250
MEMORY_GIB_PER_GPU = 16
WORKER_USER = 65532  # distroless "nonroot"


@dataclass(frozen=True)
class Owner:
    """The InferenceService that owns the children: enough for owner references and names."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }


def pool_for(spec: InferenceServiceSpec, accelerator: str) -> AcceleratorPool:
    """The spec's accelerator pool the plan chose (its node selector places the pods)."""
    for pool in spec.accelerators:
        if pool.type == accelerator:
            return pool
    raise ValueError(f"the plan chose accelerator {accelerator!r}, which the spec does not list")


def is_gpu(accelerator: str) -> bool:
    return accelerator != AcceleratorType.CPU.value


def engine_env(spec: InferenceServiceSpec, plan: Candidate) -> dict[str, str]:
    """Service-wide engine settings, read by the worker as GOODPUT_* variables (envFrom the ConfigMap)."""
    return {
        env_name("model"): spec.model.source,
        env_name("served_model_name"): spec.model.name,
        env_name("dtype"): spec.model.dtype,
        env_name("device"): "cuda" if is_gpu(plan.accelerator) else "cpu",
    }


def config_hash(data: dict[str, str]) -> str:
    """Goes into the pod template, so a changed ConfigMap rolls the pods (env is read at start)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def build_config_map(owner: Owner, spec: InferenceServiceSpec, plan: Candidate) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            owner, naming.engine_config_name(owner.name), naming.service_labels(owner.name)
        ),
        "data": engine_env(spec, plan),
    }


def engine_args(plan: Candidate, tier: TierConfig) -> list[str]:
    """The plan's engine flags for one tier; a change here changes the pod template and rolls the tier."""
    return [
        flag("max_num_seqs"),
        str(tier.max_batch),
        flag("batch_window_ms"),
        f"{tier.batch_window_ms:g}",
        flag("max_num_batched_tokens"),
        str(plan.chunk_tokens),
        flag("tensor_parallel_size"),
        str(plan.tensor_parallel),
    ]


def _resources(plan: Candidate) -> dict[str, Any]:
    if not is_gpu(plan.accelerator):
        ranks = plan.tensor_parallel
        return {
            "requests": {"cpu": f"{CPU_WORKER_REQUEST_MILLICORES * ranks}m", "memory": "2Gi"},
            "limits": {"cpu": str(CPU_WORKER_CORES * ranks), "memory": "4Gi"},
        }
    gpus = plan.tensor_parallel
    return {
        "requests": {
            "cpu": str(CPU_PER_GPU * gpus),
            "memory": f"{MEMORY_GIB_PER_GPU * gpus}Gi",
            GPU_RESOURCE: str(gpus),
        },
        "limits": {GPU_RESOURCE: str(gpus)},
    }


def _env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},
    ]
    secret = spec.worker.api_key_secret
    if secret is not None:
        env.append(
            {
                "name": env_name("api_key"),
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            }
        )
    return env


def _volumes(plan: Candidate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A writable /tmp on a read-only root; shared memory for tensor-parallel workers on GPUs."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if is_gpu(plan.accelerator) and plan.tensor_parallel > 1:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_USER,
        "runAsGroup": WORKER_USER,
        "fsGroup": WORKER_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def build_deployment(
    owner: Owner, spec: InferenceServiceSpec, plan: Candidate, tier: TierConfig, config: dict[str, str]
) -> dict[str, Any]:
    """One tier's workers. `config` is the ConfigMap data; its hash rolls the pods when it changes."""
    tier_value = str(tier.tier)
    name = naming.tier_name(owner.name, tier_value)
    pool = pool_for(spec, plan.accelerator)
    labels = naming.tier_labels(owner.name, tier_value)
    volumes, mounts = _volumes(plan)
    drain = DRAIN_SECONDS[tier_value]
    container = {
        "name": "worker",
        "image": spec.worker.image,
        "command": ["python", "-m", "goodput.worker_image"],
        "args": [
            flag("host"),
            "$(POD_IP)",
            flag("port"),
            str(naming.WORKER_PORT),
            flag("drain_timeout_s"),
            str(drain),
            *engine_args(plan, tier),
        ],
        "envFrom": [{"configMapRef": {"name": naming.engine_config_name(owner.name)}}],
        "env": _env(spec),
        "ports": [{"name": "http", "containerPort": naming.WORKER_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/ready", period=5, failures=2),
        "livenessProbe": _probe("/health", period=10, failures=6),
        "startupProbe": _probe("/health", period=5, failures=120),
        "lifecycle": {
            "preStop": {"exec": {"command": ["python", "-c", f"import time; time.sleep({PRESTOP_SECONDS})"]}}
        },
        "resources": _resources(plan),
        "securityContext": _container_security(),
        # A worker that exits on error leaves its last log lines in its status, for the Ready condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": _pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + drain + 5,
        "volumes": volumes,
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if is_gpu(plan.accelerator):
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "replicas": tier.replicas,
            "selector": {"matchLabels": naming.tier_selector(owner.name, tier_value)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        **naming.scrape_annotations(naming.WORKER_PORT),
                        naming.ANNOTATION_CONFIG_HASH: config_hash(config),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_service(owner: Owner, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            owner, naming.tier_name(owner.name, tier), naming.tier_labels(owner.name, tier)
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.tier_selector(owner.name, tier),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pdb(owner: Owner) -> dict[str, Any]:
    """At most one worker of the service evicted at a time, so node drains never empty a tier at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, naming.pdb_name(owner.name), naming.service_labels(owner.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {naming.LABEL_SERVICE: owner.name}},
        },
    }


def build_children(owner: Owner, spec: InferenceServiceSpec, plan: Candidate) -> list[dict[str, Any]]:
    """Every child for this plan, ConfigMap first (the Deployments read it at pod start)."""
    config_map = build_config_map(owner, spec, plan)
    children = [config_map]
    for tier in plan.tiers:
        children.append(build_deployment(owner, spec, plan, tier, config_map["data"]))
        children.append(build_service(owner, str(tier.tier)))
    children.append(build_pdb(owner))
    return children


def build_event(
    owner: Owner, reason: str, message: str, now_s: float, kind: str = "Normal", sequence: int = 0
) -> dict[str, Any]:
    """A core/v1 Event on the InferenceService: `kubectl describe` and `kubectl get events` show it."""
    stamp = datetime.fromtimestamp(now_s, tz=UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{owner.name}.{int(now_s * 1e6):x}{sequence:02x}",
            "namespace": owner.namespace,
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": naming.COMPONENT},
        "reportingComponent": naming.COMPONENT,
        "reportingInstance": naming.COMPONENT,
        "firstTimestamp": text,
        "lastTimestamp": text,
        "count": 1,
    }
