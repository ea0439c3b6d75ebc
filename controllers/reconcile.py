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

from goodput.controllers import actuate, builders, conditions, naming, router_builders, status
from goodput.controllers.conditions import Cond
from goodput.controllers.kube import KubeClient, KubeError
from goodput.controllers.metrics import DECISIONS, RECONCILE_ERRORS
from goodput.controllers.model_check import model_problem
from goodput.controllers.naming import MAX_LABEL_VALUE
from goodput.controllers.observation import observe_service
from goodput.controllers.planning import policy_call
from goodput.controllers.prometheus import ServiceKey, Snapshot
from goodput.controllers.runtime import PolicyNotFound, Runtime, ServiceRecord
from goodput.controllers.worker_health import worker_problem
from goodput.crds.inferenceservice import InferenceServiceSpec, Mode
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.autoscale import autoscale
from goodput.policies.planner import load_from_spec
from goodput.policies.types import Candidate, Decision, PlanResult

log = logging.getLogger("goodput.operator")

EVENT_REASONS = {"scale": "Scaled", "retune": "Retuned", "rollout": "RolledOut"}
PLANNING_RETRY_S = 60  # a planning failure no spec field explains is retried this often, not in a loop
SCALED_TO_ZERO = "ScaledToZero"  # the reason Ready (so the printer column) and SLOMet give at zero replicas


class PlanningFailed(Exception):
    """Planning raised for a spec the checks passed: reported in status, retried after PLANNING_RETRY_S."""


def infeasible_conditions(result: PlanResult, running: Candidate | None = None) -> list[Cond]:
    """Why nothing fits, as InvalidSpec (the spec cannot ever work) or CapacityLimited (its limits bind).

    With a `running` plan (the spec changed under a running service) its workers are left as they are.
    """
    best = result.alternatives[0] if result.alternatives else None
    constraint = result.binding_constraint or (best.rejected if best else None) or "unknown"
    detail = best.rejected if best is not None and best.rejected else constraint
    where = f" (best candidate: {best.accelerator} TP{best.tensor_parallel} ×{best.replicas})" if best else ""
    if not result.unservable:
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
    field = "spec.model" if reason == "ModelDoesNotFit" else "spec.slo"
    workers = (
        "no workers were created"
        if running is None
        else f"the running {running.replicas} replica(s) were left as they are"
    )
    return [
        Cond("InvalidSpec", "True", reason, f"{field}: no feasible plan at any capacity: {detail}{where}"),
        Cond("CapacityLimited", "False", "NotApplicable", "the spec cannot be served at any capacity"),
        Cond("Ready", "False", reason, f"{workers}: the spec cannot be served"),
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
    try:
        spec = InferenceServiceSpec.model_validate(body.get("spec") or {})
        if len(meta["name"]) > MAX_LABEL_VALUE:
            raise ValueError(
                f"metadata.name: at most {MAX_LABEL_VALUE} characters (it becomes a label value)"
            )
    except (ValidationError, ValueError) as error:
        await refuse(rt, body, "SpecRejected", str(error).replace("\n", " "), now)
        return
    problem = model_problem(spec.model)
    if problem is not None:
        await refuse(rt, body, problem.reason, problem.message, now)
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
        refused = (conditions.find(record.status.get("conditions", []), "InvalidSpec") or {}).get("status")
        keep_running = cause == "resume" and record.plan is not None and refused != "True"
        if not keep_running:
            try:
                decided = await _plan_now(rt, record, policy, now)
            except Exception as error:
                await _planning_failed(rt, record, error, now)
                raise PlanningFailed(str(error)) from error
            if isinstance(decided, PlanResult):
                running = record.plan if decided.unservable else None
                updates = infeasible_conditions(decided, running)
                news = _news(rt, record.key, record.status, updates)
                await _post_warnings(rt.kube, news, owner_of(meta), now)
                await actuate.write_status(rt.kube, record, compose(record, updates, now), now)
                if running is not None:  # not managed under a spec it cannot serve; its next change re-plans
                    rt.services.pop(record.key, None)
                return
            previous, record.plan = record.plan, decided
        else:
            previous = record.plan
        assert record.plan is not None
        rt.warned.pop(record.key, None)  # planned: a problem that comes back is news again
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


def owner_of(meta: dict[str, Any]) -> builders.Owner:
    return builders.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


async def refuse(rt: Runtime, body: dict[str, Any], reason: str, message: str, now: float) -> None:
    """The spec cannot be served as written: InvalidSpec=True naming the field, a Warning Event when that is
    news, nothing changed in the cluster, and the service left unmanaged until its spec changes (no retry)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    generation = int(meta.get("generation") or 0)
    stored = dict(body.get("status") or {})
    updated = status.rejected_spec_status(stored, generation, message, now, reason)
    news = _news(rt, key, stored, [Cond("InvalidSpec", "True", reason, message)])
    await rt.kube.patch_status("InferenceService", *key, updated)
    rt.services.pop(key, None)
    await _post_warnings(rt.kube, news, owner_of(meta), now)


def _news(rt: Runtime, key: ServiceKey, stored: dict[str, Any], updates: list[Cond]) -> list[Cond]:
    """The problems to post one Warning Event for: InvalidSpec or CapacityLimited turning True, or its
    message changing, against both the stored status (a resumed service does not repeat it) and what this
    operator already posted (a reconcile racing on a body read before the other's status patch does not).

    Synchronous on purpose: the check and the record happen with no await between them.
    """
    posted = rt.warned.setdefault(key, {})
    news = []
    for update in updates:
        if update.type not in ("InvalidSpec", "CapacityLimited"):
            continue
        if update.status != "True":
            posted.pop(update.type, None)
            continue
        before = conditions.find(stored.get("conditions", []), update.type) or {}
        stored_already = (before.get("status"), before.get("message")) == ("True", update.message)
        if not stored_already and posted.get(update.type) != update.message:
            posted[update.type] = update.message
            news.append(update)
    return news


async def _post_warnings(kube: KubeClient, news: list[Cond], owner: builders.Owner, now: float) -> None:
    for update in news:
        await kube.create(builders.build_event(owner, update.reason, update.message, now, "Warning"))


async def _planning_failed(rt: Runtime, record: ServiceRecord, error: Exception, now: float) -> None:
    """Planning raised: say so in Ready (and one Warning Event per distinct error) before the retry."""
    log.error("planning %s/%s failed: %r", *record.key, error)
    message = f"planning failed ({type(error).__name__}: {error}); retrying every {PLANNING_RETRY_S} s"
    ready = Cond("Ready", "False", "PlanningFailed", message)
    before = conditions.find(record.status.get("conditions", []), "Ready") or {}
    await actuate.write_status(rt.kube, record, compose(record, [ready], now), now)
    if before.get("message") != message:
        await actuate.post_event(rt.kube, record, "PlanningFailed", message, now, "Warning")


async def _plan_now(
    rt: Runtime, record: ServiceRecord, policy: SLOPolicySpec, now: float
) -> Candidate | PlanResult:
    """A new plan for a changed spec or policy: from the live load when observed, else from the hints.

    Returns the infeasible PlanResult when nothing fits (the caller writes conditions and builds nothing).
    """
    spec, state = record.spec, record.state
    hinted = await policy_call(
        rt.plans, spec, load_from_spec(spec), policy, state.ttft_factor, state.tpot_factor
    )
    if hinted.unservable:  # no capacity can serve it: the same verdict on an update as on a create
        return hinted
    if record.plan is not None and record.observation is not None:
        decision = await policy_call(
            autoscale, spec, policy, record.plan, record.observation, state, now, rt.plans
        )
        record.state = decision.state
        return decision.plan
    if hinted.chosen is None:
        return hinted
    return hinted.chosen


def ready_condition(record: ServiceRecord, ready: dict[str, tuple[int, int]]) -> Cond:
    """Ready when every tier of the plan has all its desired replicas ready (from the Deployments)."""
    if record.spec.mode == Mode.RECOMMEND:
        return Cond("Ready", "True", "RecommendOnly", "mode recommend: the plan is in status only")
    if record.plan is None:
        return Cond("Ready", "False", "NoPlan", "no plan yet")
    if record.plan.replicas == 0:
        return Cond(
            "Ready",
            "True",
            SCALED_TO_ZERO,
            "scaled to zero: the router holds a request while a replica starts",
        )
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
    if decision.plan.replicas == 0:
        return Cond("SLOMet", "Unknown", SCALED_TO_ZERO, "scaled to zero: no request to measure")
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
        ready_cond = ready_condition(record, ready)
        if ready_cond.reason == "ReplicasNotReady":
            ready_cond = await _with_worker_problem(rt, record, ready_cond, now)
        if not decision.metrics_available and metrics_cond.status == "True":  # the router's series alone
            metrics_cond = Cond("MetricsAvailable", "False", "NoWorkerSeries", decision.reason)
        updates = [metrics_cond, slo_condition(decision), ready_cond]
        if observation is not None:
            updates.append(capacity_condition(record, decision))
        await actuate.write_status(rt.kube, record, compose(record, updates, now, extra), now)
        record.last_evaluated = now
        return action


async def _with_worker_problem(rt: Runtime, record: ServiceRecord, ready: Cond, now: float) -> Cond:
    """Not ready: the containers' own reason and message from the service's pods (read only now, so a
    healthy fleet costs no reads), and a Warning Event when the reason is new."""
    selector = f"{naming.LABEL_SERVICE}={record.name}"
    try:
        problem = worker_problem(await rt.kube.list("Pod", record.namespace, selector))
    except KubeError as error:
        log.warning("reading the pods of %s/%s failed: %s", *record.key, error)
        return ready
    if problem is None:
        return ready
    before = conditions.find(record.status.get("conditions", []), "Ready") or {}
    if before.get("reason") != problem.reason:
        message = f"workers not ready: {problem.message}"
        await actuate.post_event(rt.kube, record, problem.reason, message, now, "Warning")
    return Cond("Ready", "False", problem.reason, f"{ready.message}; {problem.message}")


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
