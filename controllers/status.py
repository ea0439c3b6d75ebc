"""Pure conversions between the policies' records and the InferenceService status on the wire.

Status is built through the crds pydantic models, so what the operator writes always passes the CRD schema.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from goodput.controllers.conditions import Cond, merge
from goodput.crds.inferenceservice import (
    SCALER_WINDOW_ITEMS,
    Calibration,
    LearnedCapacity,
    LoadPoint,
    Observed,
    PlanStatus,
    RecommendationPoint,
    ScalerStatus,
    TierPlan,
)
from goodput.crds.inferenceservice import Decision as DecisionStatus
from goodput.crds.slopolicy import SLOPolicyStatus
from goodput.policies.display import ms
from goodput.policies.types import Candidate, Observation, ScalerState, TierConfig


def utc(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


def plan_status(plan: Candidate) -> dict[str, Any]:
    """The plan as status keeps it: every field of the candidate but its utilisation and verdict."""
    kept = {name: getattr(plan, name) for name in PlanStatus.model_fields if name != "tiers"}
    return PlanStatus(**kept, tiers=[TierPlan(**asdict(t)) for t in plan.tiers]).to_wire()


def plan_from_status(plan: dict[str, Any], utilisation: float) -> Candidate:
    """The running plan as the status remembers it, so a restarted operator continues from it.

    The status does not keep the plan's utilisation; the caller supplies it (see controllers.reconcile).
    """
    parsed = PlanStatus.model_validate(plan)
    tiers = tuple(TierConfig(**t.model_dump()) for t in parsed.tiers)
    return Candidate(**parsed.model_dump(exclude={"tiers"}), tiers=tiers, utilisation=utilisation)


def observed_status(observation: Observation) -> dict[str, Any]:
    def rounded(value: float | None, digits: int = 3) -> float | None:
        return None if value is None else round(value, digits)

    return Observed(
        time=utc(observation.time),
        window_seconds=observation.window_s,
        rps=round(observation.rps, 4),
        prompt_tokens_p50=rounded(observation.prompt_tokens_p50, 1),
        prompt_tokens_p95=rounded(observation.prompt_tokens_p95, 1),
        output_tokens_p50=rounded(observation.output_tokens_p50, 1),
        output_tokens_p95=rounded(observation.output_tokens_p95, 1),
        ttft_p95_ms=rounded(observation.ttft_p95_ms, 2),
        tpot_p95_ms=rounded(observation.tpot_p95_ms, 3),
        kv_cache_usage=rounded(observation.kv_cache_usage, 4),
        queue_depth=rounded(observation.queue_depth, 2),
        router_queue_depth=rounded(observation.router_queued, 2),
        router_queue_wait_p95_ms=rounded(observation.router_wait_p95_ms, 2),
        router_ttft_p95_ms=rounded(observation.router_ttft_p95_ms, 2),
        ready_replicas=observation.ready_replicas,
    ).to_wire()


def decision_status(now: float, from_replicas: int, to_replicas: int, reason: str) -> dict[str, Any]:
    return DecisionStatus(
        time=utc(now), from_replicas=from_replicas, to_replicas=to_replicas, reason=reason
    ).to_wire()


def calibration_status(state: ScalerState, now: float) -> dict[str, Any]:
    return Calibration(
        ttft_factor=round(state.ttft_factor, 4),
        tpot_factor=round(state.tpot_factor, 4),
        samples=state.calibration_samples,
        updated=utc(now) if state.calibration_samples or state.capacity or state.proven else None,
        capacity=learned_capacity(state),
    ).to_wire()


def learned_capacity(state: ScalerState) -> list[LearnedCapacity]:
    """One entry per configuration that has a learned factor or a proven load (factor 1 until learned)."""
    factors = {c: (k, n) for c, k, n in state.capacity}
    proven = dict(state.proven)
    entries = []
    for c in sorted(factors.keys() | proven.keys()):
        factor, samples = factors.get(c, (1.0, 0))
        entries.append(
            LearnedCapacity(configuration=c, factor=factor, samples=samples, proven_rps=proven.get(c))
        )
    return entries


KEPT = (
    "observed",
    "plan",
    "lastDecision",
    "calibration",
    "scaler",
    "replicas",
)  # carried from write to write


def service_status(
    previous: dict[str, Any],
    generation: int,
    updates: list[Cond],
    now: float,
    plan: Candidate | None,
    state: ScalerState,
    endpoint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An InferenceService's full status: earlier fields kept, conditions merged, this generation observed,
    the plan and calibration as the operator holds them, the router's endpoint when one fronts the service,
    then `extra` (this write's observed, lastDecision...).

    The scaler's windows are added (scaler_status) by `actuate.write_status`, only when a write is due.
    """
    out = {k: v for k, v in previous.items() if k in KEPT}
    out["observedGeneration"] = generation
    out["conditions"] = merge(previous.get("conditions", []), updates, generation, utc(now))
    if plan is not None:
        out["plan"] = plan_status(plan)
    out["calibration"] = calibration_status(state, now)
    if endpoint is not None:
        out["endpoint"] = endpoint
    if extra:
        out.update(extra)
    return out


def rejected_spec_status(
    previous: dict[str, Any], generation: int, message: str, now: float, reason: str = "SpecRejected"
) -> dict[str, Any]:
    """The status of a spec the operator refuses (`reason` says why): everything else as it was."""
    updates = [
        Cond("InvalidSpec", "True", reason, message),
        Cond("Ready", "False", "InvalidSpec", "the spec is invalid; nothing was changed"),
    ]
    merged = merge(previous.get("conditions", []), updates, generation, utc(now))
    return {**previous, "observedGeneration": generation, "conditions": merged}


def run_ends(points: tuple[tuple[float, int], ...]) -> tuple[tuple[float, int], ...]:
    """Each run of equal recommendations as its last point.

    The autoscaler only takes the least and greatest recommendation newer than some time, and a run has a
    point newer than t exactly when its last point is: a steady service keeps one point, not a window's worth.
    """
    last = len(points) - 1
    return tuple(p for i, p in enumerate(points) if i == last or points[i + 1][1] != p[1])


# The autoscaler's scalars that status keeps as they are (its windows are converted point by point).
SCALER_SCALARS = (
    "token_weight",
    "cached_prompt_fraction",
    "last_quiet",
    "slo_seen",
    "slo_missed",
    "hint_time",
    "steady_windows",
    "idle_since",
    "backlog",
)


def scaler_status(state: ScalerState) -> dict[str, Any]:
    """The autoscaler's windows, exact (no rounding), so a restarted operator decides as this one would.

    Windows longer than the schema's bound keep their newest points.
    """

    def nodes(values: tuple[float, ...] | None) -> list[float] | None:
        return None if values is None else list(values)

    return ScalerStatus(
        recommendations=[
            RecommendationPoint(time=t, replicas=r)
            for t, r in run_ends(state.recommendations)[-SCALER_WINDOW_ITEMS:]
        ],
        load_history=[LoadPoint(time=t, rps=r) for t, r in state.load_history[-SCALER_WINDOW_ITEMS:]],
        prompt_tokens_nodes=nodes(state.prompt_tokens_nodes),
        output_tokens_nodes=nodes(state.output_tokens_nodes),
        **{name: getattr(state, name) for name in SCALER_SCALARS},
    ).to_wire()


def state_from_status(status: dict[str, Any]) -> ScalerState:
    """What the autoscaler remembers across restarts: calibration, the last scaling and its windows."""
    calibration = Calibration.model_validate(status.get("calibration") or {})
    scaler = ScalerStatus.model_validate(status.get("scaler") or {})
    last = status.get("lastDecision")
    last_scale = None
    if last and last.get("from") != last.get("to"):
        last_scale = DecisionStatus.model_validate(last).time.timestamp()

    def nodes(values: list[float] | None) -> tuple[float, ...] | None:
        return None if values is None else tuple(values)

    return ScalerState(
        recommendations=tuple((p.time, p.replicas) for p in scaler.recommendations),
        last_scale_time=last_scale,
        ttft_factor=calibration.ttft_factor,
        tpot_factor=calibration.tpot_factor,
        calibration_samples=calibration.samples,
        capacity=tuple(
            (c.configuration, c.factor, c.samples)
            for c in calibration.capacity
            if c.samples or c.factor != 1.0
        ),
        proven=tuple(
            (c.configuration, c.proven_rps) for c in calibration.capacity if c.proven_rps is not None
        ),
        load_history=tuple((p.time, p.rps) for p in scaler.load_history),
        prompt_tokens_nodes=nodes(scaler.prompt_tokens_nodes),
        output_tokens_nodes=nodes(scaler.output_tokens_nodes),
        **{name: getattr(scaler, name) for name in SCALER_SCALARS},
    )


def policy_status(
    existing: dict[str, Any], generation: int | None, users: int, invalid: str | None, now: datetime
) -> dict[str, Any]:
    """SLOPolicy status: the generation the operator took (or refused, and why) and how many services use it."""
    if invalid is None:
        ready = Cond("Ready", "True", "Accepted", "the operator plans its services with this generation")
    else:
        ready = Cond("Ready", "False", "InvalidSpec", invalid)
    conditions = merge(existing.get("conditions", []), [ready], generation, now)
    return SLOPolicyStatus.model_validate(
        {"observedGeneration": generation, "services": users, "conditions": conditions}
    ).to_wire()


def plan_summary(plan: dict[str, Any] | None) -> str:
    """A plan in status.plan's form on one line: what events, `goodput status`, `explain` and its what-ifs show."""
    if not plan:
        return "—"
    tiers = plan.get("tiers") or [plan]
    shown = ", ".join(
        f"{t['tier']}×{t['replicas']} B{t['maxBatch']} W{t['batchWindowMs']:g}ms" for t in tiers
    )
    return (
        f"{plan['tensorParallel']}×{plan['accelerator']} [{shown}], predicted TTFT/TPOT p95 "
        f"{ms(plan['predictedTtftP95Ms'])}/{ms(plan['predictedTpotP95Ms'])} ms, ${plan['costPerHour']:.2f}/h"
    )
