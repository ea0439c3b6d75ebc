"""`goodput status` and `goodput explain`: the on-call view of the fleet, read from the cluster and Prometheus.

Both read InferenceServices (their status is what the operator wrote), the tier Deployments and the SLOPolicy
with the official `kubernetes` client (kubeconfig, else in-cluster). With `--prometheus URL` (or
GOODPUT_PROMETHEUS_URL) the observed p95s are refreshed through the operator's own queries
(controllers.prometheus) and observation code (policies.observe), so on-call sees the numbers the operator acts
on. `explain` re-runs policies.planner with the observed load and the calibration factors kept in status: the
decision code the operator runs, never a copy. Unreachable clusters or Prometheus are one-line errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from rich.markup import escape

from crds.common import GROUP, VERSION
from crds.inferenceservice import PLURAL, InferenceServiceSpec
from crds.slopolicy import PLURAL as POLICY_PLURAL
from crds.slopolicy import SLOPolicySpec
from policies.display import ms, ms_pair
from policies.types import Candidate, Load

PROMETHEUS_ENV = "GOODPUT_PROMETHEUS_URL"
LABEL_SERVICE = "goodput.dev/inferenceservice"
LABEL_TIER = "goodput.dev/tier"
DEFAULT_POLICY = "default"
REQUEST_TIMEOUT_S = 10
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
EXIT_UNREACHABLE = 1
EXIT_NOT_FOUND = 4
# Healthy state of each condition: anything else is worth a look.
HEALTHY = {"Ready": "True", "SLOMet": "True", "MetricsAvailable": "True", "CapacityLimited": "False"}
HEALTHY_FALSE = {"InvalidSpec": "False"}
LOAD_WHAT_IFS = (0.5, 2.0, 4.0)
SLO_WHAT_IFS = (
    ("TTFT targets ×0.5", 0.5, 1.0),
    ("TPOT targets ×0.5", 1.0, 0.5),
    ("both targets ×2", 2.0, 2.0),
)


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
    wanted = name or DEFAULT_POLICY
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


def refresh(url: str, window_s: int, keys: list[tuple[str, str]]) -> tuple[dict[tuple[str, str], Any], str]:
    """Fresh observations per service through the operator's queries; ({}, error) when Prometheus fails."""
    from controllers.prometheus import PrometheusError, PrometheusReader
    from policies.observe import build_observation

    async def read() -> Any:
        reader = PrometheusReader.connect(url, window_s, REQUEST_TIMEOUT_S)
        try:
            return await reader.read(time.time())
        finally:
            await reader.close()

    try:
        snapshot = asyncio.run(read())
    except PrometheusError as error:
        return {}, str(error)
    out: dict[tuple[str, str], Any] = {}
    for key in keys:
        tiers = snapshot.services.get(key)
        out[key] = build_observation(snapshot.time, snapshot.window_s, tiers) if tiers else None
    return out, ""


def _observed(
    obj: dict[str, Any], fresh: dict[tuple[str, str], Any] | None, note: str
) -> dict[str, Any] | None:
    """The observation shown: Prometheus's when refreshed and present, else what status last recorded."""
    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
    if fresh is not None and fresh.get(key) is not None:
        o = fresh[key]
        return {
            "source": "prometheus",
            "time": datetime.fromtimestamp(o.time, tz=UTC).isoformat(),
            "windowSeconds": o.window_s,
            "rps": o.rps,
            "ttftP95Ms": o.ttft_p95_ms,
            "tpotP95Ms": o.tpot_p95_ms,
            "kvCacheUsage": o.kv_cache_usage,
            "queueDepth": o.queue_depth,
            "promptTokensP50": o.prompt_tokens_p50,
            "promptTokensP95": o.prompt_tokens_p95,
            "outputTokensP50": o.output_tokens_p50,
            "outputTokensP95": o.output_tokens_p95,
        }
    recorded = (obj.get("status") or {}).get("observed")
    if recorded is None:
        return None
    why = note or ("Prometheus has no series for it" if fresh is not None else "")
    return {"source": "status", **({"note": why} if why else {}), **recorded}


# ---------------------------------------------------------------- goodput status


def configure_status(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="services in every namespace")
    _cluster_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument(
        "--prometheus", help=f"refresh observed p95s from this Prometheus (default: ${PROMETHEUS_ENV})"
    )
    parser.add_argument("--window", type=int, default=60, help="Prometheus window in seconds (default 60)")


def status_row(
    obj: dict[str, Any], tiers: list[dict[str, Any]], fresh: dict[tuple[str, str], Any] | None, note: str
) -> dict[str, Any]:
    """One service as `goodput status --json` prints it (camelCase like the API)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    conditions = {
        c["type"]: {"status": c["status"], "reason": c.get("reason", ""), "message": c.get("message", "")}
        for c in status.get("conditions", [])
    }
    healthy = all(
        conditions.get(kind, {}).get("status") == want for kind, want in {**HEALTHY, **HEALTHY_FALSE}.items()
    )
    return {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "resourceVersion": meta.get("resourceVersion"),
        "mode": spec.get("mode", "auto"),
        "slo": spec.get("slo", {}),
        "observed": _observed(obj, fresh, note),
        "tiers": tiers,
        "plan": status.get("plan"),
        "conditions": conditions,
        "healthy": healthy,
        "lastDecision": status.get("lastDecision"),
        "calibration": status.get("calibration"),
        "observedGeneration": status.get("observedGeneration"),
        "generation": meta.get("generation"),
    }


def run_status(args: argparse.Namespace) -> int:
    try:
        cluster = connect(args.kubeconfig, args.context)
        namespace = None if args.all_namespaces else (args.namespace or cluster.namespace)
        services = list_services(cluster, namespace)
        tiers = tier_replicas(cluster, namespace)
    except OncallError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    fresh, note = _maybe_refresh(
        args, [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in services]
    )
    rows = [
        status_row(o, tiers.get((o["metadata"]["namespace"], o["metadata"]["name"]), []), fresh, note)
        for o in services
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No InferenceServices in {where}.", file=sys.stderr)
    else:
        print_status(rows, show_namespace=namespace is None)
    return 0


def _maybe_refresh(
    args: argparse.Namespace, keys: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], Any] | None, str]:
    url = prometheus_url(args.prometheus)
    if url is None or not keys:
        return None, ""
    fresh, error = refresh(url, args.window, keys)
    if error:
        print(f"warning: {error}; showing the observations recorded in status", file=sys.stderr)
        return None, "Prometheus unreachable"
    return fresh, ""


def _console() -> Any:
    from rich.console import Console

    return Console(width=max(Console().width, 160))


def _targets(slo: dict[str, Any]) -> tuple[str, float | None, float | None]:
    ttft = slo.get("ttftP95Ms") or slo.get("ttftP99Ms")
    tpot = slo.get("tpotP95Ms") or slo.get("tpotP99Ms")
    level = "p95" if slo.get("ttftP95Ms") else "p99"
    return level, ttft, tpot


def _against(value: float | None, target: float | None) -> str:
    if value is None:
        return "—"
    text = ms(value) if target is None else ms_pair(value, target)[0]
    return f"[red]{text}[/]" if target is not None and value > target else f"[green]{text}[/]"


def plan_summary(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "—"
    return (
        f"{plan['tensorParallel']}×{plan['accelerator']} B{plan['maxBatch']} W{plan['batchWindowMs']:g}ms "
        f"${plan['costPerHour']:.2f}/h"
    )


def age(stamp: str | None) -> str:
    if not stamp:
        return "—"
    seconds = max(0.0, time.time() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def conditions_summary(conditions: dict[str, dict[str, str]]) -> str:
    if not conditions:
        return "[yellow]none yet[/]"
    wrong = []
    for kind, want in {**HEALTHY, **HEALTHY_FALSE}.items():
        got = conditions.get(kind)
        if got is None or got["status"] == want:
            continue
        colour = "yellow" if got["status"] == "Unknown" else "red"
        wrong.append(f"[{colour}]{kind}={got['status']}[/] {escape(got['reason'])}")
    return "\n".join(wrong) or "[green]ok[/]"


def print_status(rows: list[dict[str, Any]], show_namespace: bool) -> None:
    from rich.table import Table

    table = Table(show_lines=True)
    columns = ["namespace"] if show_namespace else []
    columns += ["name", "mode", "SLO ttft/tpot ms", "p95 ttft/tpot ms", "rps", "replicas ready/desired"]
    columns += ["plan", "conditions", "last decision"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("rps",) else "left", overflow="fold")
    for row in rows:
        level, ttft, tpot = _targets(row["slo"])
        observed = row["observed"] or {}
        tiers = "\n".join(f"{t['tier']} {t['ready']}/{t['desired']}" for t in row["tiers"]) or "—"
        decision = row["lastDecision"]
        last = (
            "—"
            if not decision
            else f"{age(decision['time'])} ago {decision['from']}→{decision['to']}: {escape(decision['reason'])}"
        )
        source = observed.get("source")
        cells = [row["namespace"]] if show_namespace else []
        cells += [
            row["name"],
            row["mode"],
            f"{level} {ms(ttft)}/{ms(tpot)}",
            f"{_against(observed.get('ttftP95Ms'), ttft)}/{_against(observed.get('tpotP95Ms'), tpot)}"
            + (f"\n[dim]{source}[/]" if source else ""),
            "—" if observed.get("rps") is None else f"{observed['rps']:.2f}",
            tiers,
            plan_summary(row["plan"]),
            conditions_summary(row["conditions"]),
            last,
        ]
        table.add_row(*cells)
    _console().print(table)


# ---------------------------------------------------------------- goodput explain


def configure_explain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="InferenceService name")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    _cluster_flags(parser)
    parser.add_argument("--rps", type=float, help="explain the plan at this load instead of the observed one")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.add_argument(
        "--plot", help="write the latency–throughput frontier of the plan and alternatives (PNG)"
    )


def observed_load(
    spec: InferenceServiceSpec, observed: dict[str, Any] | None, rps: float | None
) -> tuple[Load, str]:
    """The load to explain: the observed rate and token mix where status (or Prometheus) has them, else the
    spec's hints; `rps` overrides the rate."""
    from policies import planner

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
    return Load(rate, prompts, outputs, hint.batch_fraction), f"rate: {source}; token mix: {mix}"


@dataclass(frozen=True)
class ReplicaRange:
    """The loads between which a configuration keeps its replica count, and where it hits a spec limit."""

    replicas: int
    down_below_rps: float | None  # fewer replicas suffice below this rate
    up_above_rps: float | None  # more replicas needed above it
    limit_rps: float | None  # above it the configuration breaks a limit (maxReplicas, maxCount, budget)
    limit: str | None


def replica_range(
    spec: InferenceServiceSpec,
    candidate: Candidate,
    load: Load,
    policy: SLOPolicySpec,
    ttft: float,
    tpot: float,
) -> ReplicaRange | None:
    """Bisect the rate with planner.replicas_for (the autoscaler's resize of a running plan)."""
    from policies import planner

    def sized(rps: float) -> Candidate:
        return planner.replicas_for(spec, candidate, replace(load, rps=rps), policy, ttft, tpot)

    def over_limit(c: Candidate) -> bool:
        return c.rejected is not None and c.rejected.split(":")[0] in ("max_count", "max_replicas", "budget")

    here = sized(load.rps)
    if here.rejected is not None and not over_limit(here):
        return None  # ruled out at any load (memory, or a target unreachable even unloaded)
    n = here.replicas

    def edge(lo: float, hi: float, past: Callable[[Candidate], bool]) -> float:
        """The rate in (lo, hi] where `past` first holds, to 0.5 %."""
        while hi - lo > 0.005 * hi:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if past(sized(mid)) else (mid, hi)
        return hi

    def first(past: Callable[[Candidate], bool]) -> float | None:
        lo, hi = load.rps, max(load.rps * 2, 1e-3)
        for _ in range(40):
            if past(sized(hi)):
                return edge(lo, hi, past)
            lo, hi = hi, hi * 2
        return None

    up = first(lambda c: c.replicas > n)
    down = None
    if n > spec.scaling.min_replicas and sized(0.0).replicas < n:
        down = edge(0.0, load.rps, lambda c: c.replicas >= n)
    limit_rps = load.rps if over_limit(here) else first(over_limit)
    limit = sized(limit_rps).rejected if limit_rps is not None else None
    return ReplicaRange(n, down, up, limit_rps, limit)


def _scaled_slo(spec: InferenceServiceSpec, ttft: float, tpot: float) -> InferenceServiceSpec:
    slo = spec.slo
    changed = slo.model_copy(
        update={
            "ttft_p95_ms": slo.ttft_p95_ms and slo.ttft_p95_ms * ttft,
            "ttft_p99_ms": slo.ttft_p99_ms and slo.ttft_p99_ms * ttft,
            "tpot_p95_ms": slo.tpot_p95_ms and slo.tpot_p95_ms * tpot,
            "tpot_p99_ms": slo.tpot_p99_ms and slo.tpot_p99_ms * tpot,
        }
    )
    return spec.model_copy(update={"slo": changed})


def _brief(candidate: Candidate | None) -> str | None:
    if candidate is None:
        return None
    return (
        f"{candidate.replicas}× {candidate.tensor_parallel}×{candidate.accelerator} B{candidate.max_batch} "
        f"W{candidate.batch_window_ms:g}ms ${candidate.cost_per_hour:.2f}/h"
    )


def what_ifs(
    spec: InferenceServiceSpec, load: Load, policy: SLOPolicySpec, ttft: float, tpot: float
) -> list[dict[str, Any]]:
    """The plan under other loads and SLOs: what change would alter it."""
    from policies import planner

    base = load.rps if load.rps > 0 else planner.load_from_spec(spec).rps
    cases: list[tuple[str, InferenceServiceSpec, Load]] = [
        (f"load ×{f:g} ({base * f:.3g} rps)", spec, replace(load, rps=base * f)) for f in LOAD_WHAT_IFS
    ]
    cases += [(label, _scaled_slo(spec, a, b), load) for label, a, b in SLO_WHAT_IFS]
    out = []
    for label, changed, at in cases:
        result = planner.plan(changed, at, policy, ttft, tpot)
        out.append(
            {
                "change": label,
                "plan": _brief(result.chosen),
                "costPerHour": None if result.chosen is None else round(result.chosen.cost_per_hour, 4),
                "bindingConstraint": result.binding_constraint,
            }
        )
    return out


def frontier_rows(curve: Any, slo: dict[str, Any], points: int = 8) -> list[dict[str, Any]]:
    """A compact frontier: evenly spaced points of the curve plus the planned per-replica rate."""
    _, ttft, tpot = _targets(slo)
    index = np.unique(np.linspace(0, len(curve.rps) - 1, points).round().astype(int))
    rows = []
    for i in index:
        rows.append(
            {
                "rpsPerReplica": float(curve.rps[i]),
                "ttftP95Ms": float(curve.ttft_p95_ms[i]),
                "tpotP95Ms": float(curve.tpot_p95_ms[i]),
                "meetsSlo": bool(
                    (ttft is None or curve.ttft_p95_ms[i] <= ttft)
                    and (tpot is None or curve.tpot_p95_ms[i] <= tpot)
                ),
                "planned": False,
            }
        )
    if curve.planned_rps > 0:
        at = curve.planned_rps
        t1, t2 = (
            float(np.interp(at, curve.rps, curve.ttft_p95_ms)),
            float(np.interp(at, curve.rps, curve.tpot_p95_ms)),
        )
        rows.append(
            {
                "rpsPerReplica": at,
                "ttftP95Ms": t1,
                "tpotP95Ms": t2,
                "meetsSlo": bool((ttft is None or t1 <= ttft) and (tpot is None or t2 <= tpot)),
                "planned": True,
            }
        )
    return sorted(rows, key=lambda r: r["rpsPerReplica"])


def explain(
    obj: dict[str, Any],
    policy: SLOPolicySpec,
    policy_source: str,
    observed: dict[str, Any] | None,
    rps: float | None,
) -> tuple[dict[str, Any], Any]:
    """The explanation as JSON, and the planner result (for --plot)."""
    from controllers.cli import plan_report
    from controllers.status import plan_from_status, state_from_status
    from policies import planner
    from policies.autoscale import budgeted_headroom
    from policies.profiles import profile_for

    spec = InferenceServiceSpec.model_validate(obj["spec"])
    status = obj.get("status") or {}
    calibration = status.get("calibration") or {}
    ttft, tpot = float(calibration.get("ttftFactor", 1.0)), float(calibration.get("tpotFactor", 1.0))
    # plan with the headroom the operator plans with: the policy's, lowered while the error budget is unspent
    headroom, spent = budgeted_headroom(spec, policy, state_from_status(status), time.time())
    configured = policy
    policy = policy.model_copy(update={"headroom": headroom})
    load, load_source = observed_load(spec, observed, rps)
    result = planner.plan(spec, load, policy, ttft, tpot)
    report = plan_report(spec, load, profile_for(spec.model), result)
    running = status.get("plan")
    pools = {p.type for p in spec.accelerators}
    basis: Candidate | None = result.chosen
    basis_name = "the plan at this load"
    if running and running.get("accelerator") in pools and running.get("tiers"):
        basis, basis_name = plan_from_status(running, utilisation=0.0), "the running plan (status.plan)"
    try:
        ranges = replica_range(spec, basis, load, policy, ttft, tpot) if basis is not None else None
    except ValueError:  # the running plan's tiers predate a spec change (traffic class): size the new plan
        basis, basis_name = result.chosen, "the plan at this load"
        ranges = replica_range(spec, basis, load, policy, ttft, tpot) if basis is not None else None
    frontier = None
    if result.chosen is not None:
        curve = planner.frontier(spec, load, result.chosen, ttft_factor=ttft, tpot_factor=tpot)
        frontier = {"label": curve.label, "rows": frontier_rows(curve, spec.slo.to_wire())}
    meta = obj["metadata"]
    out = {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "mode": spec.mode,
        "policy": {"source": policy_source, **configured.to_wire()},
        "errorBudget": {"spent": round(spent, 4), "headroom": headroom},
        "slo": spec.slo.to_wire(),
        "observed": observed,
        "calibration": {"ttftFactor": ttft, "tpotFactor": tpot, "samples": calibration.get("samples", 0)},
        "loadSource": load_source,
        "running": running,
        "lastDecision": status.get("lastDecision"),
        "conditions": status.get("conditions", []),
        **report,
        "sameAsRunning": _same(running, result.chosen),
        "replicaRange": None
        if ranges is None
        else {
            "basis": basis_name,
            "replicas": ranges.replicas,
            "downBelowRps": ranges.down_below_rps,
            "upAboveRps": ranges.up_above_rps,
            "limitRps": ranges.limit_rps,
            "limit": ranges.limit,
        },
        "whatIf": what_ifs(spec, load, policy, ttft, tpot),
        "frontier": frontier,
    }
    return out, result


def _same(running: dict[str, Any] | None, chosen: Candidate | None) -> bool | None:
    if running is None or chosen is None:
        return None
    return (
        running.get("accelerator"),
        running.get("tensorParallel"),
        running.get("replicas"),
        running.get("maxBatch"),
        running.get("batchWindowMs"),
    ) == (
        chosen.accelerator,
        chosen.tensor_parallel,
        chosen.replicas,
        chosen.max_batch,
        chosen.batch_window_ms,
    )


def run_explain(args: argparse.Namespace) -> int:
    try:
        cluster = connect(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.namespace
        obj = get_service(cluster, namespace, args.name)
        policy, policy_source = read_policy(cluster, (obj.get("spec") or {}).get("policyRef"))
        events = recent_events(cluster, namespace, args.name)
    except OncallError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    fresh, note = _maybe_refresh(args, [(namespace, args.name)])
    observed = _observed(obj, fresh, note)
    try:
        report, result = explain(obj, policy, policy_source, observed, args.rps)
        report["events"] = events
    except (KeyError, ValueError) as error:
        print(f"error: cannot plan {namespace}/{args.name}: {error}", file=sys.stderr)
        return 2
    if args.plot:
        from controllers.cli import plot_frontiers
        from policies import planner

        spec = InferenceServiceSpec.model_validate(obj["spec"])
        load, _ = observed_load(spec, observed, args.rps)
        calibration = report["calibration"]
        shown = [c for c in (result.chosen, *result.alternatives) if c is not None and c.replicas > 0]
        curves = [
            planner.frontier(
                spec, load, c, ttft_factor=calibration["ttftFactor"], tpot_factor=calibration["tpotFactor"]
            )
            for c in shown
        ]
        plot_frontiers(curves, spec, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_explain(report)
    return 0


def _fmt_rps(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g} rps"


def print_explain(report: dict[str, Any]) -> None:
    from rich.table import Table

    from controllers.cli import _print_table

    console = _console()
    name = f"{report['namespace']}/{report['name']}"
    console.rule(f"[bold]{name}[/] · mode {report['mode']} · {report['policy']['source']}")
    for condition in report["conditions"]:
        console.print(
            f"  {condition['type']}={condition['status']} "
            + escape(f"{condition.get('reason', '')}: {condition.get('message', '')}")
        )
    observed = report["observed"]
    if observed:
        console.print(
            f"[bold]Observed[/] ({observed['source']}{', ' + observed['note'] if observed.get('note') else ''}, "
            f"window {observed.get('windowSeconds', 0):g} s at {observed.get('time')}): "
            f"{observed.get('rps', 0):.3g} rps, TTFT p95 {ms(observed.get('ttftP95Ms'))} ms, "
            f"TPOT p95 {ms(observed.get('tpotP95Ms'))} ms, KV {_pct(observed.get('kvCacheUsage'))}, "
            f"queue {ms(observed.get('queueDepth'))}"
        )
    else:
        console.print("[bold]Observed[/]: nothing yet (no window recorded in status)")
    cal = report["calibration"]
    console.print(
        f"[bold]Calibration[/]: TTFT ×{cal['ttftFactor']:.3g}, TPOT ×{cal['tpotFactor']:.3g} "
        f"({cal['samples']} windows); predictions below are multiplied by these"
    )
    budget = report["errorBudget"]
    console.print(
        f"[bold]Error budget[/]: {budget['spent']:.0%} of the TTFT misses the SLO allows spent over the last "
        f"hour; planning with headroom {budget['headroom']:.2g} (policy {report['policy']['headroom']:.2g})"
    )
    console.print(f"[bold]Planned for[/]: {escape(report['loadSource'])}")
    running = report["running"]
    console.print(
        f"[bold]Running plan[/] (status.plan): {plan_summary(running)}"
        + (
            f", {running['replicas']} replicas, predicted TTFT/TPOT p95 {ms(running['predictedTtftP95Ms'])}/"
            f"{ms(running['predictedTpotP95Ms'])} ms"
            if running
            else ""
        )
    )
    if report["sameAsRunning"] is False:
        console.print(
            "[yellow]The planner picks something else at this load[/]: the operator plans for recent peaks too, "
            "keeps the accelerator and TP unless the saving passes rolloutSavingThreshold, and stabilizes "
            "scale-downs (see lastDecision)."
        )
    decision = report["lastDecision"]
    if decision:
        console.print(
            f"[bold]Last decision[/] {age(decision['time'])} ago: {decision['from']}→{decision['to']}: "
            + escape(decision["reason"])
        )
    console.rule(
        "the planner at this load: chosen configuration and the alternatives, with what rules each out"
    )
    _print_table(report, alternatives=8)
    if report["binding_constraint"]:
        console.print(f"[red]No feasible plan[/]: {escape(report['binding_constraint'])}")
    ranges = report["replicaRange"]
    if ranges:
        console.rule(f"what load would change it ({ranges['basis']})")
        floor = "" if ranges["downBelowRps"] is not None else " (the minimum it may run)"
        console.print(
            f"{ranges['replicas']} replica(s){floor} keep the SLO from {_fmt_rps(ranges['downBelowRps'] or 0.0)} "
            f"up to {_fmt_rps(ranges['upAboveRps'])}; above that the autoscaler adds replicas"
            + (
                f"; from {_fmt_rps(ranges['limitRps'])} it hits a limit: {ranges['limit']}"
                if ranges["limitRps"]
                else ""
            )
        )
    table = Table(title="what-if (re-planned)")
    for column in ("change", "plan", "binding constraint"):
        table.add_column(column)
    for row in report["whatIf"]:
        table.add_row(row["change"], row["plan"] or "[red]none[/]", row["bindingConstraint"] or "")
    console.print(table)
    frontier = report["frontier"]
    if frontier:
        console.rule(f"frontier of the chosen configuration, {frontier['label']}: predicted p95 per replica")
        table = Table()
        for column in ("rps/replica", "TTFT p95 ms", "TPOT p95 ms", "SLO", ""):
            table.add_column(column, justify="right")
        for row in frontier["rows"]:
            table.add_row(
                f"{row['rpsPerReplica']:.3g}",
                ms(row["ttftP95Ms"]),
                ms(row["tpotP95Ms"]),
                "[green]met[/]" if row["meetsSlo"] else "[red]missed[/]",
                "[bold]← planned[/]" if row["planned"] else "",
            )
        console.print(table)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"
