"""What `goodput status` and `goodput explain` read: the cluster's objects and Prometheus's fresh windows.

The InferenceServices (their status is what the operator wrote), the tier Deployments, the events and the
SLOPolicy come from the official `kubernetes` client (kubeconfig, else in-cluster). With `--prometheus URL`
(or GOODPUT_PROMETHEUS_URL) the observations are refreshed through the operator's own queries
(controllers.prometheus) and observation code (controllers.observation), so on-call sees the numbers the
operator acts on. Unreachable clusters or Prometheus are one-line errors, never tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from goodput.controllers.naming import LABEL_SERVICE, LABEL_TIER
from goodput.crds.common import GROUP, VERSION
from goodput.crds.inferenceservice import PLURAL, InferenceServiceSpec
from goodput.crds.slopolicy import DEFAULT_POLICY_NAME, SLOPolicySpec
from goodput.crds.slopolicy import PLURAL as POLICY_PLURAL
from goodput.policies.types import Load, Observation

PROMETHEUS_ENV = "GOODPUT_PROMETHEUS_URL"
REQUEST_TIMEOUT_S = 10
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
EXIT_UNREACHABLE = 1
EXIT_NOT_FOUND = 4
ServiceKey = tuple[str, str]  # (namespace, name)


class OncallError(Exception):
    """What went wrong, in one line for the terminal (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- cluster access


@dataclass
class Cluster:
    """An API client and the namespace kubectl would use by default."""

    client: Any  # kubernetes.client.ApiClient
    server: str
    namespace: str

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API request as plain JSON (no client models: they reject what they do not expect); transport and
        HTTP failures become OncallError naming the server."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            response = fn(*args, _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False, **kwargs)
            return json.loads(response.data)
        except ApiException as error:
            if error.status == 404 and what.startswith("list"):
                raise OncallError(
                    f"{what}: the API server at {self.server} does not serve goodput.dev/{VERSION} "
                    "(are the CRDs installed? kubectl apply --server-side -k manifests/crds)"
                ) from None
            if error.status == 404:
                raise OncallError(f"{what}: not found", EXIT_NOT_FOUND) from None
            raise OncallError(f"{what}: {error.status} {error.reason} from {self.server}") from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            raise OncallError(f"cannot reach the API server at {self.server}: {_short(error)}") from None


def _short(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error).splitlines()[0][:200]


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config), else the in-cluster ServiceAccount."""
    from kubernetes import client, config

    configuration = client.Configuration()
    configuration.retries = 1
    namespace = "default"
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    from_file = bool(kubeconfig) or os.path.exists(path.split(os.pathsep)[0])
    try:
        if from_file:
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
            contexts, active = config.list_kube_config_contexts(config_file=path)
            chosen = context or (active or {}).get("name")
            found = next((c for c in contexts if c["name"] == chosen), {})
            namespace = found.get("context", {}).get("namespace") or namespace
        else:
            config.load_incluster_config(client_configuration=configuration)
            if os.path.exists(SERVICE_ACCOUNT_NAMESPACE):
                with open(SERVICE_ACCOUNT_NAMESPACE) as handle:
                    namespace = handle.read().strip() or namespace
    except (config.ConfigException, OSError, ValueError, KeyError, TypeError) as error:
        where = path if from_file else f"no kubeconfig at {path}, and not in a pod"
        raise OncallError(f"no usable cluster configuration ({where}): {_short(error)}") from None
    return Cluster(client.ApiClient(configuration), configuration.host, namespace)


def list_services(cluster: Cluster, namespace: str | None) -> list[dict[str, Any]]:
    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(cluster.client)
    if namespace is None:
        answer = cluster.call(
            "list InferenceServices", api.list_cluster_custom_object, GROUP, VERSION, PLURAL
        )
    else:
        answer = cluster.call(
            "list InferenceServices", api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
        )
    items = list(answer.get("items", []))
    return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def get_service(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(cluster.client)
    try:
        return dict(
            cluster.call(
                f"InferenceService {namespace}/{name}",
                api.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        )
    except OncallError as error:
        if error.code == EXIT_NOT_FOUND:
            raise OncallError(
                f"InferenceService {name} not found in namespace {namespace} (kubectl get gpsvc -A)",
                EXIT_NOT_FOUND,
            ) from None
        raise


def tier_replicas(cluster: Cluster, namespace: str | None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(namespace, service) → its tier Deployments' desired and ready replicas, from one list call."""
    from kubernetes.client import AppsV1Api

    api = AppsV1Api(cluster.client)
    if namespace is None:
        answer = cluster.call(
            "list Deployments", api.list_deployment_for_all_namespaces, label_selector=LABEL_SERVICE
        )
    else:
        answer = cluster.call(
            "list Deployments", api.list_namespaced_deployment, namespace, label_selector=LABEL_SERVICE
        )
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for deployment in answer.get("items", []):
        meta = deployment["metadata"]
        labels = meta.get("labels") or {}
        out.setdefault((meta["namespace"], labels[LABEL_SERVICE]), []).append(
            {
                "tier": labels.get(LABEL_TIER, ""),
                "deployment": meta["name"],
                "desired": (deployment.get("spec") or {}).get("replicas", 1),
                "ready": (deployment.get("status") or {}).get("readyReplicas", 0),
            }
        )
    return {key: sorted(tiers, key=lambda t: t["tier"]) for key, tiers in out.items()}


def recent_events(cluster: Cluster, namespace: str, name: str, count: int = 5) -> list[dict[str, Any]]:
    """The service's newest events (the operator posts one per change, with the decision's reason)."""
    from kubernetes.client import CoreV1Api

    selector = f"involvedObject.kind=InferenceService,involvedObject.name={name}"
    answer = cluster.call(
        "list Events", CoreV1Api(cluster.client).list_namespaced_event, namespace, field_selector=selector
    )
    events = sorted(
        answer.get("items", []),
        key=lambda e: (
            e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp", "")
        ),
    )
    return [
        {
            "time": e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp"),
            "type": e.get("type", ""),
            "reason": e.get("reason", ""),
            "message": e.get("message", ""),
            "count": e.get("count", 1),
        }
        for e in events[-count:]
    ]


def read_policy(cluster: Cluster, name: str | None) -> tuple[SLOPolicySpec, str]:
    """The service's SLOPolicy and where it came from; the built-in default when the cluster has none."""
    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(cluster.client)
    wanted = name or DEFAULT_POLICY_NAME
    try:
        obj = cluster.call(
            f"SLOPolicy {wanted}", api.get_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL, wanted
        )
    except OncallError as error:
        if error.code != EXIT_NOT_FOUND:
            raise
        if name:
            return SLOPolicySpec(), f"SLOPolicy {name} NOT FOUND (PolicyNotFound); built-in defaults shown"
        return SLOPolicySpec(), "built-in defaults (no SLOPolicy named default)"
    return SLOPolicySpec.model_validate(obj.get("spec") or {}), f"SLOPolicy {wanted}"


# ---------------------------------------------------------------- Prometheus


def prometheus_url(flag: str | None) -> str | None:
    return flag or os.environ.get(PROMETHEUS_ENV) or None


@dataclass(frozen=True)
class Fresh:
    """A service's observation as the operator would take it now, or why it would have none."""

    observation: Observation | None
    missing: str  # the MetricsAvailable=False message when there is no observation


def refresh(
    url: str, window_s: int, services: dict[ServiceKey, tuple[InferenceServiceSpec, SLOPolicySpec]]
) -> tuple[dict[ServiceKey, Fresh], str]:
    """Each service's observation through the operator's queries and observation code (its TTFT target, its
    policy's staleness limit); ({}, error) when Prometheus fails."""
    from goodput.controllers.observation import observe_service
    from goodput.controllers.prometheus import PrometheusError, PrometheusReader, Snapshot

    async def read() -> Snapshot:
        reader = PrometheusReader.connect(url, window_s, REQUEST_TIMEOUT_S)
        try:
            return await reader.read(time.time())
        finally:
            await reader.close()

    try:
        snapshot = asyncio.run(read())
    except PrometheusError as error:
        return {}, str(error)
    out: dict[ServiceKey, Fresh] = {}
    for key, (spec, policy) in services.items():
        observation, condition = observe_service(snapshot, key, spec, policy)
        out[key] = Fresh(observation, "" if observation is not None else condition.message)
    return out, ""


def observation_shown(obj: dict[str, Any], fresh: Fresh | None, note: str) -> dict[str, Any] | None:
    """The observation shown: Prometheus's when refreshed and present, else what status last recorded (with
    why it is not fresh); both in status.observed's form."""
    from goodput.controllers.status import observed_status

    if fresh is not None and fresh.observation is not None:
        return {"source": "prometheus", **observed_status(fresh.observation)}
    recorded = (obj.get("status") or {}).get("observed")
    if recorded is None:
        return None
    why = note or (f"Prometheus: {fresh.missing}" if fresh is not None else "")
    return {"source": "status", **({"note": why} if why else {}), **recorded}


def observed_load(
    spec: InferenceServiceSpec,
    observed: dict[str, Any] | None,
    rps: float | None,
    cached_prompt_fraction: float,
) -> tuple[Load, str]:
    """The load to explain: the observed rate and token mix where status (or Prometheus) has them, else the
    spec's hints; `rps` overrides the rate. The prefix cache's share of prompt tokens (status.scaler's) is
    planned as the autoscaler plans it."""
    from goodput.policies import planner
    from goodput.policies.cached_prefill import planned_share

    hint = planner.load_from_spec(spec)
    observed = observed or {}
    prompts, outputs = hint.prompt_tokens, hint.output_tokens
    mix = "spec hints"
    p50, p95 = observed.get("promptTokensP50"), observed.get("promptTokensP95")
    o50, o95 = observed.get("outputTokensP50"), observed.get("outputTokensP95")
    if p50 and p95 and o50 and o95:
        prompts = planner.lognormal_samples(max(p50, 1.0), max(p95, p50, 1.0))
        outputs = np.random.default_rng(0).permutation(
            planner.lognormal_samples(max(o50, 1.0), max(o95, o50, 1.0))
        )
        mix = "observed"
    if rps is not None:
        rate, source = rps, "--rps"
    elif observed.get("rps") is not None:
        rate, source = float(observed["rps"]), "observed"
    else:
        rate, source = hint.rps, "spec hint (expectedRps)"
    load = Load(rate, prompts, outputs, hint.batch_fraction, planned_share(cached_prompt_fraction))
    return load, f"rate: {source}; token mix: {mix}"
