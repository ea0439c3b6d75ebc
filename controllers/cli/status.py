"""`goodput status`: every InferenceService on one row: SLO, observed p95s, replicas, plan, conditions, decision."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

from pydantic import ValidationError
from rich.markup import escape

from goodput.controllers.cli.reading import cluster_flags, key_of, refreshed
from goodput.controllers.cli.render import age, console
from goodput.controllers.oncall import (
    Cluster,
    Fresh,
    OncallError,
    connect,
    list_services,
    observation_shown,
    read_policy,
    tier_replicas,
)
from goodput.controllers.status import plan_summary
from goodput.crds.inferenceservice import SLO
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.display import ms, ms_pair

# Healthy state of each condition: anything else is worth a look.
HEALTHY = {"Ready": "True", "SLOMet": "True", "MetricsAvailable": "True", "CapacityLimited": "False"}
HEALTHY_FALSE = {"InvalidSpec": "False"}


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="services in every namespace")
    cluster_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def status_row(
    obj: dict[str, Any], tiers: list[dict[str, Any]], fresh: Fresh | None, note: str
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
        "observed": observation_shown(obj, fresh, note),
        "tiers": tiers,
        "scaledToZero": scaled_to_zero(spec, status),
        "plan": status.get("plan"),
        "conditions": conditions,
        "healthy": healthy,
        "lastDecision": status.get("lastDecision"),
        "calibration": status.get("calibration"),
        "observedGeneration": status.get("observedGeneration"),
        "generation": meta.get("generation"),
    }


def scaled_to_zero(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether the operator runs the service at zero replicas (an idle service with minReplicas 0)."""
    plan = status.get("plan") or {}
    return spec.get("mode", "auto") == "auto" and plan.get("replicas") == 0


def run(args: argparse.Namespace) -> int:
    try:
        cluster = connect(args.kubeconfig, args.context)
        namespace = None if args.all_namespaces else (args.namespace or cluster.namespace)
        services = list_services(cluster, namespace)
        tiers = tier_replicas(cluster, namespace)
        fresh, note = refreshed(args, services, functools.cache(lambda name: _policy(cluster, name)))
    except OncallError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    rows = [
        status_row(o, tiers.get(key_of(o), []), None if fresh is None else fresh.get(key_of(o)), note)
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


def _policy(cluster: Cluster, name: str | None) -> SLOPolicySpec:
    """A service's SLOPolicy, for its staleness limit. Reading SLOPolicies (cluster-scoped) takes more RBAC
    than listing services: when refused, say so and judge staleness by the built-in defaults."""
    try:
        return read_policy(cluster, name)[0]
    except OncallError as error:
        print(f"warning: {error}; judging staleness by the built-in SLOPolicy defaults", file=sys.stderr)
        return SLOPolicySpec()


def _targets(slo: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """The level and the TTFT and TPOT targets the observed p95s are held to; an SLO the API would refuse says
    so."""
    try:
        (quantile, ttft), (_, tpot) = SLO.model_validate(slo).steering_targets()
    except ValidationError:
        return "invalid", None, None
    return f"p{quantile * 100:.0f}", ttft, tpot


def client_ttft(observed: dict[str, Any]) -> float | None:
    """The TTFT p95 the autoscaler judges: what the router's clients see where it timed any, else the workers'."""
    router = observed.get("routerTtftP95Ms")
    return observed.get("ttftP95Ms") if router is None else router


def _against(value: float | None, target: float | None) -> str:
    if value is None:
        return "—"
    text = ms(value) if target is None else ms_pair(value, target)[0]
    return f"[red]{text}[/]" if target is not None and value > target else f"[green]{text}[/]"


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
        if row.get("scaledToZero"):
            tiers = "scaled to zero"
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
            f"{_against(client_ttft(observed), ttft)}/{_against(observed.get('tpotP95Ms'), tpot)}"
            + (f"\n[dim]{source}[/]" if source else ""),
            "—" if observed.get("rps") is None else f"{observed['rps']:.2f}",
            tiers,
            escape(plan_summary(row["plan"])),
            conditions_summary(row["conditions"]),
            last,
        ]
        table.add_row(*cells)
    console().print(table)
