"""Per-service logic between the kopf handlers / the poller and the pure policies.

`reconcile` runs on create, update, resume and policy edits: plan, apply the children, write status.
`evaluate` runs every control interval from the shared poller: observation → `policies.autoscale` → actuate.
Decisions are always the policies'; this module only turns them into writes, conditions and events.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controllers import actuate, router_builders, status
from controllers.conditions import Cond
from controllers.kube import KubeError
from controllers.metrics import DECISIONS, RECONCILE_ERRORS
from controllers.naming import MAX_LABEL_VALUE
from controllers.observation import observe_service
from controllers.planning import policy_call
from controllers.prometheus import Snapshot
from controllers.runtime import PolicyNotFound, Runtime, ServiceRecord
from crds.inferenceservice import InferenceServiceSpec, Mode
from crds.slopolicy import SLOPolicySpec
from policies.autoscale import autoscale
from policies.planner import load_from_spec
from policies.types import Candidate, Decision, PlanResult

log = logging.getLogger("goodput.operator")

EVENT_REASONS = {"scale": "Scaled", "retune": "Retuned", "rollout": "RolledOut"}
CAPACITY_CONSTRAINTS = ("budget", "max_replicas", "max_count")


def infeasible_conditions(result: PlanResult) -> list[Cond]:
    """Why nothing fits, as InvalidSpec (the spec cannot ever work) or CapacityLimited (its limits bind)."""
    best = result.alternatives[0] if result.alternatives else None
    constraint = result.binding_constraint or (best.rejected if best else None) or "unknown"
    detail = best.rejected if best is not None and best.rejected else constraint
    where = f" (best candidate: {best.accelerator} TP{best.tensor_parallel} ×{best.replicas})" if best else ""
    if constraint.startswith(CAPACITY_CONSTRAINTS):
        return [
            Cond("InvalidSpec", "False", "SpecValid", "the spec is valid"),
            Cond(
                "CapacityLimited",
                "True",
                "NoFeasiblePlan",
                f"no plan meets the SLO within the limits: {detail}{where}",
            ),
            Cond("Ready", "False", "NoFeasiblePlan", "no workers were created: no plan fits the limits"),
        ]
    reason = "ModelDoesNotFit" if constraint.startswith("memory") else "SLOUnachievable"
    return [
        Cond("InvalidSpec", "True", reason, f"no feasible plan: {detail}{where}"),
        Cond("CapacityLimited", "False", "NotApplicable", "the spec cannot be served at any capacity"),
        Cond("Ready", "False", reason, "no workers were created: the spec cannot be served"),
    ]


def compose(
    record: ServiceRecord, updates: list[Cond], now: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The service's full status to write, from what the record holds (see status.service_status)."""
    routed = record.spec.router is not None and record.spec.mode == Mode.AUTO
    endpoint = router_builders.endpoint(record.name, record.namespace) if routed else None
    return status.service_status(
        record.status, record.generation, updates, now, record.plan, record.state, endpoint, extra
    )


def record_for(rt: Runtime, body: dict[str, Any], spec: InferenceServiceSpec) -> ServiceRecord:
    """The in-memory record, created from the stored status on first sight (so a restart resumes)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    record = rt.services.get(key)
    stored = dict(body.get("status") or {})
    if record is None:
        record = ServiceRecord(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=spec,
            state=status.state_from_status(stored),
            status=stored,
        )
        if stored.get("plan"):
            record.plan = resumed_plan(stored["plan"])
        rt.services[key] = record
    record.uid = meta["uid"]
    record.generation = int(meta.get("generation") or 0)
    record.spec = spec
    return record


def resumed_plan(stored: dict[str, Any]) -> Candidate:
    """The stored plan. Its utilisation is not kept in status and nothing downstream reads it: NaN, unknown."""
    return status.plan_from_status(stored, utilisation=math.nan)


async def reconcile(rt: Runtime, body: dict[str, Any], cause: str) -> None:
    """Plan and apply one service. Called by kopf (create/update/resume) and on SLOPolicy edits."""
    meta = body["metadata"]
    now = time.time()
    generation = int(meta.get("generation") or 0)
    try:
        spec = InferenceServiceSpec.model_validate(body.get("spec") or {})
        if len(meta["name"]) > MAX_LABEL_VALUE:
            raise ValueError(
                f"metadata.name: at most {MAX_LABEL_VALUE} characters (it becomes a label value)"
            )
    except (ValidationError, ValueError) as error:
        message = str(error).replace("\n", " ")
        stored = dict(body.get("status") or {})
        await rt.kube.patch_status(
            "InferenceService",
            meta["namespace"],
            meta["name"],
            status.rejected_spec_status(stored, generation, message, now),
        )
        rt.services.pop((meta["namespace"], meta["name"]), None)
        return
    record = record_for(rt, body, spec)
    async with record.lock:
        try:
            policy = await rt.policy(spec.policy_ref)
        except PolicyNotFound as error:
            updates = [
                Cond("Ready", "False", "PolicyNotFound", f"{error}; create it or remove spec.policyRef")
            ]
            await actuate.write_status(rt.kube, record, compose(record, updates, now), now)
            raise
        keep_running = cause == "resume" and record.plan is not None
        if not keep_running:
            decided = await _plan_now(rt, record, policy, now)
            if isinstance(decided, PlanResult):
                await actuate.write_status(
                    rt.kube, record, compose(record, infeasible_conditions(decided), now), now
                )
                return
            previous, record.plan = record.plan, decided
        else:
            previous = record.plan
        assert record.plan is not None
        valid = [
            Cond("InvalidSpec", "False", "SpecValid", "the spec is valid"),
            Cond("CapacityLimited", "False", "WithinLimits", "the plan meets the SLO within the limits"),
        ]
        if spec.mode == Mode.AUTO:
            existing = rt.existing_tiers(record.key) | {str(t.tier) for t in (previous or record.plan).tiers}
            await actuate.apply_plan(rt.kube, record, record.plan, existing)
        else:
            valid.append(Cond("Ready", "True", "RecommendOnly", "mode recommend: the plan is in status only"))
        if not record.status.get("conditions"):
            valid.append(
                Cond("MetricsAvailable", "Unknown", "NotYetObserved", "no control interval has run yet")
            )
            valid.append(Cond("SLOMet", "Unknown", "NotYetObserved", "no control interval has run yet"))
        extra = None
        if previous is None or previous != record.plan:
            reason = f"planned {status.plan_summary(status.plan_status(record.plan))} on {cause}"
            extra = {
                "lastDecision": status.decision_status(
                    now, previous.replicas if previous else 0, record.plan.replicas, reason
                )
            }
            await actuate.post_event(rt.kube, record, "Planned", reason, now)
        await actuate.write_status(rt.kube, record, compose(record, valid, now, extra), now)


async def _plan_now(
    rt: Runtime, record: ServiceRecord, policy: SLOPolicySpec, now: float
) -> Candidate | PlanResult:
    """A new plan for a changed spec or policy: from the live load when observed, else from the hints.

    Returns the infeasible PlanResult when nothing fits (the caller writes conditions and builds nothing).
    """
    spec, state = record.spec, record.state
    if record.plan is not None and record.observation is not None:
        decision = await policy_call(
            autoscale, spec, policy, record.plan, record.observation, state, now, rt.plans
        )
        record.state = decision.state
        return decision.plan
    result = await policy_call(
        rt.plans, spec, load_from_spec(spec), policy, state.ttft_factor, state.tpot_factor
    )
    if result.chosen is None:
        return result
    return result.chosen


def ready_condition(record: ServiceRecord, ready: dict[str, tuple[int, int]]) -> Cond:
    """Ready when every tier of the plan has all its desired replicas ready (from the Deployments)."""
    if record.spec.mode == Mode.RECOMMEND:
        return Cond("Ready", "True", "RecommendOnly", "mode recommend: the plan is in status only")
    if record.plan is None:
        return Cond("Ready", "False", "NoPlan", "no plan yet")
    missing = []
    for tier in record.plan.tiers:
        _, available = ready.get(str(tier.tier), (tier.replicas, 0))
        if available < tier.replicas:
            missing.append(f"{tier.tier} {available}/{tier.replicas}")
    if missing:
        return Cond("Ready", "False", "ReplicasNotReady", "ready: " + ", ".join(missing))
    return Cond("Ready", "True", "ReplicasReady", "every tier has its replicas ready")


def capacity_condition(record: ServiceRecord, decision: Decision) -> Cond:
    """Capacity-limited: the SLO is missed while the service already runs at its replica or budget limit."""
    plan, scaling = decision.plan, record.spec.scaling
    at_max = plan.replicas >= scaling.max_replicas
    over_budget = scaling.max_cost_per_hour is not None and plan.cost_per_hour >= scaling.max_cost_per_hour
    if decision.slo_met is False and (at_max or over_budget):
        limit = (
            f"maxReplicas {scaling.max_replicas}"
            if at_max
            else f"maxCostPerHour {scaling.max_cost_per_hour:g}"
        )
        return Cond(
            "CapacityLimited", "True", "AtLimit", f"SLO missed at the {limit} limit: {decision.reason}"
        )
    return Cond("CapacityLimited", "False", "WithinLimits", "the plan meets the SLO within the limits")


def slo_condition(decision: Decision) -> Cond:
    if decision.slo_met is None:
        return Cond("SLOMet", "Unknown", "NoObservation", "no latency observed in the window")
    if decision.slo_met:
        return Cond("SLOMet", "True", "Met", "observed p95s are within the SLO")
    return Cond("SLOMet", "False", "Violated", decision.reason)


async def evaluate(
    rt: Runtime,
    record: ServiceRecord,
    snapshot: Snapshot | None,
    ready: dict[str, tuple[int, int]],
    now: float,
) -> str:
    """One control interval for one service. Returns the decision's action ("hold" when nothing changed)."""
    async with record.lock:
        if record.plan is None:
            return "hold"
        policy = await rt.policy(record.spec.policy_ref)
        observation, metrics_cond = observe_service(snapshot, record.key, record.spec, policy)
        record.observation = observation
        previous = record.plan
        decision = await policy_call(
            autoscale, record.spec, policy, previous, observation, record.state, now, rt.plans
        )
        record.state = decision.state
        action = decision.action if decision.plan != previous else "hold"
        extra: dict[str, Any] = {}
        if record.spec.mode == Mode.AUTO and ready:
            extra["replicas"] = sum(available for _, available in ready.values())
        if observation is not None:
            extra["observed"] = status.observed_status(observation)
        if action != "hold":
            record.plan = decision.plan
            mode = str(record.spec.mode)
            reason = decision.reason if mode == Mode.AUTO else f"recommend: {decision.reason}"
            extra["lastDecision"] = status.decision_status(
                now, previous.replicas, decision.plan.replicas, reason
            )
            DECISIONS.labels(action=action, mode=mode).inc()
            if record.spec.mode == Mode.AUTO:
                try:
                    existing = {str(t.tier) for t in previous.tiers}
                    await actuate.apply_plan(rt.kube, record, decision.plan, existing)
                except Exception:
                    RECONCILE_ERRORS.labels(stage="actuate").inc()
                    record.plan = previous
                    raise
            await actuate.post_event(rt.kube, record, EVENT_REASONS.get(action, "Decided"), reason, now)
        updates = [metrics_cond, slo_condition(decision), ready_condition(record, ready)]
        if observation is not None:
            updates.append(capacity_condition(record, decision))
        await actuate.write_status(rt.kube, record, compose(record, updates, now, extra), now)
        record.last_evaluated = now
        return action


async def write_policy_status(
    rt: Runtime, name: str, existing: dict[str, Any], generation: int | None, invalid: str | None
) -> None:
    """Say on the SLOPolicy which generation the operator took (or why not) and how many services use it.

    A failed write is logged, not raised: the policy is in force either way, and the next change retries.
    """
    users = rt.users_of(name)
    body = status.policy_status(existing, generation, users, invalid, datetime.now(UTC))
    await _patch_policy_status(rt, name, body, users)


async def refresh_policy_users(rt: Runtime) -> None:
    """Rewrite status.services of the policies whose users changed since it was written (services come,
    go and change policyRef without any SLOPolicy event)."""
    users = Counter(record.policy_name for record in rt.services.values())
    for name, written in list(rt.policy_users_written.items()):
        if name in rt.policies and users[name] != written:
            await _patch_policy_status(rt, name, {"services": users[name]}, users[name])


async def _patch_policy_status(rt: Runtime, name: str, body: dict[str, Any], users: int) -> None:
    try:
        await rt.kube.patch_status("SLOPolicy", None, name, body)
    except KubeError as error:
        log.warning("writing the status of SLOPolicy %s failed: %s", name, error)
    else:
        rt.policy_users_written[name] = users
