"""`goodput explain`: why a service runs its plan, and what would change it.

It re-runs policies.planner with the observed load, the calibration factors kept in status and the headroom
the operator plans with: the decision code the operator runs, never a copy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rich.markup import escape

from goodput.controllers.cli.flags import non_negative_float
from goodput.controllers.cli.reading import cluster_flags, refreshed
from goodput.controllers.cli.render import (
    age,
    console,
    pct,
    plan_report,
    plot_plan,
    print_plan_table,
    rps_text,
)
from goodput.controllers.oncall import (
    OncallError,
    connect,
    get_service,
    observation_shown,
    observed_load,
    read_policy,
    recent_events,
)
from goodput.controllers.status import plan_status, plan_summary
from goodput.crds.inferenceservice import SLO, InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.display import ms
from goodput.policies.types import Candidate, Load

EXIT_UNPLANNABLE = 2  # the service's spec or plan cannot be planned from here
LOAD_WHAT_IFS = (0.5, 2.0, 4.0)
SLO_WHAT_IFS = (
    ("TTFT targets ×0.5", 0.5, 1.0),
    ("TPOT targets ×0.5", 1.0, 0.5),
    ("both targets ×2", 2.0, 2.0),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="InferenceService name")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    cluster_flags(parser)
    parser.add_argument(
        "--rps", type=non_negative_float, help="explain the plan at this load instead of the observed one"
    )
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.add_argument(
        "--plot", help="write the latency–throughput frontier of the plan and alternatives (PNG)"
    )


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
    from goodput.policies import planner

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


def what_ifs(
    spec: InferenceServiceSpec, load: Load, policy: SLOPolicySpec, ttft: float, tpot: float
) -> list[dict[str, Any]]:
    """The plan under other loads and SLOs: what change would alter it."""
    from goodput.policies import planner

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
                "plan": None if result.chosen is None else plan_summary(plan_status(result.chosen)),
                "costPerHour": None if result.chosen is None else round(result.chosen.cost_per_hour, 4),
                "bindingConstraint": result.binding_constraint,
            }
        )
    return out


def frontier_rows(curve: Any, slo: SLO, points: int = 8) -> list[dict[str, Any]]:
    """A compact frontier: evenly spaced points of the curve plus the planned per-replica rate."""
    (_, ttft), (_, tpot) = slo.steering_targets()
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
    from goodput.controllers.status import plan_from_status, state_from_status
    from goodput.policies import planner
    from goodput.policies.autoscale import budgeted_headroom
    from goodput.policies.frontier import frontier as frontier_of
    from goodput.policies.profiles import profile_for

    spec = InferenceServiceSpec.model_validate(obj["spec"])
    status = obj.get("status") or {}
    calibration = status.get("calibration") or {}
    ttft, tpot = float(calibration.get("ttftFactor", 1.0)), float(calibration.get("tpotFactor", 1.0))
    # plan with the headroom the operator plans with: the policy's, lowered while the error budget is unspent
    state = state_from_status(status)
    headroom, spent = budgeted_headroom(spec, policy, state, time.time())
    configured = policy
    policy = policy.model_copy(update={"headroom": headroom})
    load, load_source = observed_load(spec, observed, rps, state.cached_prompt_fraction)
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
        curve = frontier_of(spec, load, result.chosen, ttft_factor=ttft, tpot_factor=tpot)
        frontier = {"label": curve.label, "rows": frontier_rows(curve, spec.slo)}
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


def run(args: argparse.Namespace) -> int:
    try:
        cluster = connect(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.namespace
        obj = get_service(cluster, namespace, args.name)
        policy, policy_source = read_policy(cluster, (obj.get("spec") or {}).get("policyRef"))
        events = recent_events(cluster, namespace, args.name)
        fresh, note = refreshed(args, [obj], lambda _: policy)
    except OncallError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    shown = observation_shown(obj, None if fresh is None else fresh.get((namespace, args.name)), note)
    try:
        report, result = explain(obj, policy, policy_source, shown, args.rps)
        report["events"] = events
    except (KeyError, ValueError) as error:
        print(f"error: cannot plan {namespace}/{args.name}: {error}", file=sys.stderr)
        return EXIT_UNPLANNABLE
    if args.plot:
        spec = InferenceServiceSpec.model_validate(obj["spec"])
        from goodput.controllers.status import state_from_status

        cached = state_from_status(obj.get("status") or {}).cached_prompt_fraction
        load, _ = observed_load(spec, shown, args.rps, cached)
        calibration = report["calibration"]
        plot_plan(spec, load, result, calibration["ttftFactor"], calibration["tpotFactor"], args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_explain(report)
    return 0


def print_explain(report: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    name = f"{report['namespace']}/{report['name']}"
    out.rule(f"[bold]{name}[/] · mode {report['mode']} · {report['policy']['source']}")
    for condition in report["conditions"]:
        out.print(
            f"  {condition['type']}={condition['status']} "
            + escape(f"{condition.get('reason', '')}: {condition.get('message', '')}")
        )
    observed = report["observed"]
    if observed:
        router_ttft = observed.get("routerTtftP95Ms")
        at_router = (
            "" if router_ttft is None else f" (at the router, as clients see it: {ms(router_ttft)} ms)"
        )
        out.print(
            f"[bold]Observed[/] ({observed['source']}{', ' + observed['note'] if observed.get('note') else ''}, "
            f"window {observed.get('windowSeconds', 0):g} s at {observed.get('time')}): "
            f"{observed.get('rps', 0):.3g} rps, TTFT p95 {ms(observed.get('ttftP95Ms'))} ms{at_router}, "
            f"TPOT p95 {ms(observed.get('tpotP95Ms'))} ms, KV {pct(observed.get('kvCacheUsage'))}, "
            f"queue {ms(observed.get('queueDepth'))}"
        )
    else:
        out.print("[bold]Observed[/]: nothing yet (no window recorded in status)")
    cal = report["calibration"]
    out.print(
        f"[bold]Calibration[/]: TTFT ×{cal['ttftFactor']:.3g}, TPOT ×{cal['tpotFactor']:.3g} "
        f"({cal['samples']} windows); predictions below are multiplied by these"
    )
    budget = report["errorBudget"]
    out.print(
        f"[bold]Error budget[/]: {budget['spent']:.0%} of the TTFT misses the SLO allows spent over the last "
        f"hour; planning with headroom {budget['headroom']:.2g} (policy {report['policy']['headroom']:.2g})"
    )
    out.print(f"[bold]Planned for[/]: {escape(report['loadSource'])}")
    running = report["running"]
    out.print(f"[bold]Running plan[/] (status.plan): {escape(plan_summary(running))}")
    if report["sameAsRunning"] is False:
        out.print(
            "[yellow]The planner picks something else at this load[/]: the operator plans for recent peaks too, "
            "keeps the accelerator and TP unless the saving passes rolloutSavingThreshold, and stabilizes "
            "scale-downs (see lastDecision)."
        )
    decision = report["lastDecision"]
    if decision:
        out.print(
            f"[bold]Last decision[/] {age(decision['time'])} ago: {decision['from']}→{decision['to']}: "
            + escape(decision["reason"])
        )
    out.rule("the planner at this load: chosen configuration and the alternatives, with what rules each out")
    print_plan_table(report, alternatives=8)
    if report["bindingConstraint"]:
        out.print(f"[red]No feasible plan[/]: {escape(report['bindingConstraint'])}")
    ranges = report["replicaRange"]
    if ranges:
        out.rule(f"what load would change it ({ranges['basis']})")
        floor = "" if ranges["downBelowRps"] is not None else " (the minimum it may run)"
        out.print(
            f"{ranges['replicas']} replica(s){floor} keep the SLO from {rps_text(ranges['downBelowRps'] or 0.0)} "
            f"up to {rps_text(ranges['upAboveRps'])}; above that the autoscaler adds replicas"
            + (
                f"; from {rps_text(ranges['limitRps'])} it hits a limit: {ranges['limit']}"
                if ranges["limitRps"]
                else ""
            )
        )
    table = Table(title="what-if (re-planned)")
    for column in ("change", "plan", "binding constraint"):
        table.add_column(column)
    for row in report["whatIf"]:
        table.add_row(
            row["change"], escape(row["plan"] or "") or "[red]none[/]", row["bindingConstraint"] or ""
        )
    out.print(table)
    frontier = report["frontier"]
    if frontier:
        out.rule(f"frontier of the chosen configuration, {frontier['label']}: predicted p95 per replica")
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
        out.print(table)
