"""The autoscaling policy the operator runs each control interval, and the simulator replays.

One decision per interval, from the planner at the load the service must be ready for:

1. Fresh metrics or hold: with no observation, or a stale one, or none from the workers of a service that has
   replicas, hold the current plan (never scale down) and say metrics are unavailable. Zero traffic is an
   observation.
2. Budget: count this window's late first tokens against the TTFT error budget (policies/budget.py).
3. Calibrate the performance model on the running configuration (policies/calibration.py), and learn what
   a replica of it really carries at the SLO (policies/capacity.py; never more while the budget is
   overspent): the plan divides the load by that factor, keeping each replica near a load it has been seen to
   carry within the SLO. The budget spent sets the headroom the plan keeps.
4. Anticipate the load to plan for: demand, fading recent peaks, the observed token mix (policies/demand.py).
5. React: when the observed p95 breaches the SLO with more requests queued than replicas ready, the queue is
   not already draining, and (for TTFT) the wait it implies reaches the target, scale at least in proportion;
   otherwise go to the plan at once. The TTFT
   that breaches (and spends the error budget) is the one clients see: the router's where it timed first tokens,
   else the workers'. Calibration reads the workers' TTFT (a replica's own latency, what its factors correct);
   capacity learning the clients' (the load the whole path carries at the SLO).
6. Stabilize like the HPA: scale up to the lowest recommendation of the up window (up to the max step; a
   breach or a queue at once), scale down to the highest recommendation of the down window, at
   most max step, after a cooldown.
   A fresh autoscaler counts the plan for the manifest's expected rate as its first recommendation: the
   hint holds for one down window, or until a few windows of steady traffic show what the service needs.
7. Change accelerator or TP (a rollout) only when the predicted saving clears the policy's threshold.

With minReplicas 0, an idle service goes to zero and a request held by the router wakes it (policies/idle.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from goodput.crds.inferenceservice import InferenceServiceSpec, Tier
from goodput.crds.slopolicy import MissingMetrics, SLOPolicySpec
from goodput.policies import planner
from goodput.policies.budget import budget_note, budgeted_headroom, spend_budget
from goodput.policies.calibration import calibrate
from goodput.policies.capacity import (
    capacity_factor,
    configuration,
    learn_capacity,
    prove_load,
    proven_floor,
)
from goodput.policies.demand import anticipated_load, rate_steady, token_mix
from goodput.policies.display import exceeds
from goodput.policies.idle import awake, track_idle, zero_decision
from goodput.policies.types import Candidate, Decision, Load, Observation, PlanResult, ScalerState, TierConfig

PlanFn = Callable[[InferenceServiceSpec, Load, SLOPolicySpec, float, float], PlanResult]

HINT_TRUST_WINDOWS = 8  # consecutive windows of steady traffic after which observations replace the hint
REACTIVE_MAX_RATIO = 2.0  # a breach scales the ready fleet by observed/target p95, at most this much


def autoscale(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    observation: Observation | None,
    state: ScalerState,
    now: float,
    plan_fn: PlanFn | None = None,
) -> Decision:
    """Decide replicas, engine knobs and tier split for the next interval; see the module docstring."""
    plan_fn = plan_fn or planner.plan
    slo_ttft, slo_tpot = slo_targets(spec)
    if observation is None or now - observation.time > policy.stale_after_seconds:
        age = "no metrics" if observation is None else f"metrics {now - observation.time:.0f} s old"
        return _without_metrics(spec, policy, current, age, state, now, plan_fn)
    if current.replicas > 0 and observation.running is None:  # the router's series alone: pods not up yet
        return _without_metrics(spec, policy, current, "no worker metrics", state, now, plan_fn)
    obs = observation
    state = track_idle(obs, state, now)
    zero = zero_decision(spec, policy, current, obs, state, now)
    if zero is not None:
        return zero
    spec = awake(spec)  # from here on the plan keeps at least one replica
    fresh = not state.recommendations and not state.load_history

    steady = obs.rps > 0 and rate_steady(obs, state)
    state = replace(state, steady_windows=state.steady_windows + 1 if steady else 0)
    state = token_mix(obs, state, policy)
    state = spend_budget(obs, state, policy)
    state = calibrate(spec, policy, current, obs, state, slo_ttft)
    state = learn_capacity(spec, policy, current, obs, state)
    breach = _breach(obs, slo_ttft, slo_tpot)
    load, arrivals_rps, demand_rps, anticipated_rps, state = anticipated_load(spec, policy, obs, state, now)
    state = prove_load(policy, current, obs, state, breach is None, load.rps)
    draining = arrivals_rps < obs.rps  # the fleet already serves more than arrives

    headroom, spent = budgeted_headroom(spec, policy, state, now)
    planning = policy if headroom == policy.headroom else policy.model_copy(update={"headroom": headroom})
    # a replica carries k times what the model says: plan the model's fleet for 1/k of the load
    scaled = replace(load, rps=load.rps / capacity_factor(state, current))
    result = plan_fn(spec, scaled, planning, state.ttft_factor, state.tpot_factor)
    planned = _choose(result, current, policy)
    limited = planned is None
    if planned is None:  # nothing meets the SLO at this load: run the largest fleet we may, if that can help
        planned = current if result.unservable else _with_replicas(current, spec.scaling.max_replicas)
    else:
        planned = _settled_engine(spec, planning, planned, current, scaled, state)
        planned = _within_proven(spec, planning, planned, current, load, state, plan_fn)

    raw, reactive = _reactive(
        planned.replicas, obs, breach, slo_ttft, slo_tpot, result.unservable or draining
    )
    raw = min(max(raw, spec.scaling.min_replicas), spec.scaling.max_replicas)

    seed = _hint_seed(spec, policy, state, now, plan_fn) if fresh else ()
    state = _recommend(policy, state, seed, now, raw)
    slo_met = None if breach is None and obs.requests == 0 else breach is None
    tier, at = current.tier, f"at {obs.rps:.3g} rps"
    if configuration(planned) != configuration(current):
        # a rollout: the recommendations so far count replicas of the old configuration, so they start afresh
        stay = _staying(result, current)
        why = (
            f"predicted saving {_saving(planned, stay):.0%} ≥ {policy.rollout_saving_threshold:.0%}"
            if stay is not None
            else "the running configuration cannot meet the SLO at this load"
        )
        reason = f"rolling out {tier} to {planned.tensor_parallel}×{planned.accelerator} ×{raw}: {why} {at}"
        state = replace(state, recommendations=((now, raw),), last_scale_time=now)
        return Decision(_with_replicas(planned, raw), state, "rollout", reason, True, slo_met)

    queued = obs.backlog > (obs.ready_replicas or 0)  # more requests wait than replicas are ready
    target = _stabilize(
        policy, current.replicas, state.recommendations, now, state.last_scale_time, bool(reactive) or queued
    )
    target = min(max(target, spec.scaling.min_replicas), spec.scaling.max_replicas)
    new_plan = _with_replicas(planned, target)
    if demand_rps <= 0:  # an idle window says nothing about batch size: keep the engine as is
        new_plan = _keep_knobs(new_plan, current)
    note = budget_note(policy, headroom, spent)
    if target != current.replicas:
        if reactive:
            why = reactive
        elif current.replicas == 0:
            why = f"woke from zero: {obs.backlog:g} request(s) held by the router"
        elif limited:
            why = f"no configuration meets the SLO at {anticipated_rps:.3g} rps (capacity limited)"
        elif target > current.replicas:
            why = f"planned for {anticipated_rps:.3g} rps{note}"
        else:
            why = f"load fell to {demand_rps:.3g} rps for {policy.scale_down_stabilization_seconds:.0f} s"
        reason = f"scaled {tier} {current.replicas}→{target}: {why} {at}"
        return Decision(new_plan, replace(state, last_scale_time=now), "scale", reason, True, slo_met)
    if (new_plan.max_batch, new_plan.batch_window_ms) != (current.max_batch, current.batch_window_ms):
        reason = (
            f"retuned {tier}: max batch {current.max_batch}→{new_plan.max_batch}, batch window "
            f"{current.batch_window_ms:g}→{new_plan.batch_window_ms:g} ms {at}"
        )
        return Decision(new_plan, state, "retune", reason, True, slo_met)
    held = f"holding {tier} at {current.replicas}"
    if raw < current.replicas:
        reason = f"{held}: scale-down to {raw} waits for stabilization {at}"
    elif raw > current.replicas:
        reason = f"{held}: scale-up to {raw} waits for stabilization {at}"
    elif result.unservable:
        reason = f"{held}: no replica count meets the SLO ({result.binding_constraint}) {at}"
    else:
        reason = f"{held}: planned for {anticipated_rps:.3g} rps{note} {at}"
    return Decision(new_plan, state, "hold", reason, True, slo_met)


def _without_metrics(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    age: str,
    state: ScalerState,
    now: float,
    plan_fn: PlanFn,
) -> Decision:
    """No observation, or a stale one: hold (never scale down), or scale up towards the plan for the spec's
    traffic hints when the policy says to use them.

    A window without metrics is not idle: the idle period restarts when they return."""
    tier = current.tier
    state = replace(state, idle_since=None)
    hinted = (
        _hinted_plan(spec, policy, state, plan_fn)
        if policy.missing_metrics == MissingMetrics.USE_HINTS
        else None
    )
    if hinted is not None and hinted.replicas > current.replicas:
        target = _with_replicas(hinted, min(hinted.replicas, current.replicas + policy.max_scale_up_step))
        reason = f"scaled {tier} {current.replicas}→{target.replicas}: {age}, planned from spec hints"
        return Decision(target, replace(state, last_scale_time=now), "scale", reason, False, None)
    reason = f"holding {tier} at {current.replicas}: {age}, never scaling down without them"
    return Decision(current, state, "hold", reason, False, None)


def _reactive(
    planned: int, obs: Observation, breach: str | None, slo_ttft: float, slo_tpot: float, futile: bool
) -> tuple[int, str]:
    """The replicas to recommend and the breach that makes them urgent ('' when the plan stands).

    A breach that the queue explains scales the ready fleet by observed/target p95 (at most
    REACTIVE_MAX_RATIO): more requests wait than replicas are ready, and for TTFT the wait they imply reaches
    the target. By Little's law the queue's mean wait is backlog / arrival rate, and a wait spread like an
    exponential has its p95 at ln 20 ≈ 3 times its mean. A breach the queue does not explain is long prompts'
    own prefill and the few behind them, which a fleet half as large again does not shorten: it only makes the
    plan urgent (on steady code traffic a 2 s p95 with 5 requests waiting on 14 replicas had raised the fleet
    to 23 for a scale-down window; on steady chat at 46 rps, 14 waiting on 4 replicas, a 0.3 s mean wait, had
    doubled it). Neither when more replicas would not fix it (`futile`): even an unloaded replica misses the
    target, or the backlog is already draining, so the late first tokens are the queue's past, not a
    shortfall now (scaling by them while the pods ordered for a burst came up ran a flash crowd's fleet to the
    maximum).
    """
    if futile or not breach or not obs.ready_replicas or obs.backlog <= 0:
        return planned, ""
    if obs.backlog <= obs.ready_replicas:
        return planned, breach
    ttft = obs.client_ttft_p95_ms
    queue_wait_p95_ms = obs.backlog / obs.rps * 1000.0 * math.log(20.0) if obs.rps > 0 else math.inf
    ratio = max(
        ttft / slo_ttft if ttft is not None and queue_wait_p95_ms >= slo_ttft else 0.0,
        (obs.tpot_p95_ms or 0.0) / slo_tpot if obs.tpot_p95_ms is not None else 0.0,
    )
    return max(planned, math.ceil(obs.ready_replicas * min(ratio, REACTIVE_MAX_RATIO))), breach


def _within_proven(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    planned: Candidate,
    current: Candidate,
    load: Load,
    state: ScalerState,
    plan_fn: PlanFn,
) -> Candidate:
    """`planned` with at least the replicas that keep each near a load it has been seen to carry within the
    SLO, where the learned capacity (k > 1) is what plans it fewer; never more than the model alone plans."""
    floor = proven_floor(state, planned, load.rps)
    if floor is None or floor <= planned.replicas or capacity_factor(state, current) <= 1.0:
        return planned
    unaided = _feasible(plan_fn(spec, load, policy, state.ttft_factor, state.tpot_factor))
    if unaided is not None and configuration(unaided) == configuration(planned):
        floor = min(floor, unaided.replicas)
    return _with_replicas(planned, max(planned.replicas, floor))


def _recommend(
    policy: SLOPolicySpec,
    state: ScalerState,
    seed: tuple[tuple[float, int], ...],
    now: float,
    raw: int,
) -> ScalerState:
    """The state with this interval's recommendation added to those still inside a stabilization window.

    The hint's seed stands until steady traffic has been observed for HINT_TRUST_WINDOWS windows, or until it
    leaves the windows.
    """
    hint_time = seed[0][0] if seed else state.hint_time
    kept = [(t, r) for t, r in state.recommendations if t > now - _keep(policy)]
    if hint_time is not None and state.steady_windows >= HINT_TRUST_WINDOWS:
        kept = [(t, r) for t, r in kept if t > hint_time]  # steady traffic observed: it decides, not the hint
        hint_time = None
    if hint_time is not None and hint_time <= now - _keep(policy):
        hint_time = None
    return replace(state, recommendations=(*seed, *kept, (now, raw)), hint_time=hint_time)


def _hint_seed(
    spec: InferenceServiceSpec, policy: SLOPolicySpec, state: ScalerState, now: float, plan_fn: PlanFn
) -> tuple[tuple[float, int], ...]:
    """A fresh autoscaler's first recommendation: the replicas planned for the manifest's traffic hints, as
    if recommended the interval before its first observation, so they stand for one scale-down window, or
    until HINT_TRUST_WINDOWS windows of steady traffic have shown what the service needs."""
    hinted = _hinted_plan(spec, policy, state, plan_fn)
    return () if hinted is None else ((now - policy.evaluation_interval_seconds, hinted.replicas),)


def _hinted_plan(
    spec: InferenceServiceSpec, policy: SLOPolicySpec, state: ScalerState, plan_fn: PlanFn
) -> Candidate | None:
    """The feasible plan for the manifest's expected traffic; None without that hint or a feasible plan."""
    if spec.traffic.expected_rps is None:
        return None
    return _feasible(
        plan_fn(spec, planner.load_from_spec(spec), policy, state.ttft_factor, state.tpot_factor)
    )


def slo_targets(spec: InferenceServiceSpec) -> tuple[float, float]:
    (_, ttft), (_, tpot) = spec.slo.steering_targets()
    return ttft, tpot


def _breach(obs: Observation, slo_ttft: float, slo_tpot: float) -> str | None:
    """The readable breach, or None when both observed p95s meet their targets (or are unknown). TTFT is the
    clients': behind a router, what its queue adds is a breach too (the workers' TTFT starts after it)."""
    ttft = obs.client_ttft_p95_ms
    if ttft is not None and ttft > slo_ttft:
        where = " at the router" if obs.router_ttft_p95_ms is not None else ""
        return f"TTFT p95{where} {exceeds(ttft, slo_ttft)}"
    if obs.tpot_p95_ms is not None and obs.tpot_p95_ms > slo_tpot:
        return f"TPOT p95 {exceeds(obs.tpot_p95_ms, slo_tpot)}"
    return None


def _feasible(result: PlanResult) -> Candidate | None:
    return result.chosen if result.chosen is not None and result.chosen.feasible else None


def _choose(result: PlanResult, current: Candidate, policy: SLOPolicySpec) -> Candidate | None:
    """The planner's choice, unless it changes accelerator or TP for less than the rollout threshold saves."""
    best = _feasible(result)
    if best is None:
        return None
    if configuration(best) == configuration(current):
        return best
    stay = _staying(result, current)
    if stay is None:
        return best
    return best if _saving(best, stay) >= policy.rollout_saving_threshold else stay


def _staying(result: PlanResult, current: Candidate) -> Candidate | None:
    """The planner's feasible candidate on the running accelerator and TP, if it priced one."""
    same = configuration(current)
    return next(
        (
            c
            for c in (result.chosen, *result.alternatives)
            if c is not None and c.feasible and configuration(c) == same
        ),
        None,
    )


def _saving(new: Candidate, old: Candidate) -> float:
    """Share of the hourly cost saved by `new` over `old`, each at the replicas it needs."""
    return 1.0 - new.cost_per_hour / max(old.cost_per_hour, 1e-9)


def _settled_engine(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    planned: Candidate,
    current: Candidate,
    load: Load,
    state: ScalerState,
) -> Candidate:
    """`planned`, or the running engine settings sized for the same load when they need no more replicas.

    New engine settings are new worker arguments, so every pod of the tier restarts. Among settings that need
    as many replicas the planner picks the one with the most predicted capacity, a difference of a few percent
    that a window's token mix moves: on the Mooncake trace max batch went 64 → 32 → 64 twenty times an hour.
    Settings the policy no longer allows (an edited batch window range) always give way.
    """
    same_tiers = [t.tier for t in planned.tiers] == [t.tier for t in current.tiers]
    if (
        current.replicas == 0
        or not same_tiers
        or configuration(planned) != configuration(current)
        or _engine(planned) == _engine(current)
        or not planner.settings_allowed(policy, current.tiers)
    ):
        return planned
    kept = planner.replicas_for(spec, current, load, policy, state.ttft_factor, state.tpot_factor)
    return kept if kept.feasible and kept.replicas <= planned.replicas else planned


def _engine(c: Candidate) -> tuple[tuple[Tier, int, float], ...]:
    """The engine settings a candidate's workers start with, tier by tier."""
    return tuple((t.tier, t.max_batch, t.batch_window_ms) for t in c.tiers)


def _keep_knobs(plan: Candidate, current: Candidate) -> Candidate:
    """`plan`'s replicas with the running engine settings (max batch, batch window), tier by tier."""
    running = {t.tier: t for t in current.tiers}
    tiers = tuple(
        replace(t, max_batch=running[t.tier].max_batch, batch_window_ms=running[t.tier].batch_window_ms)
        if t.tier in running
        else t
        for t in plan.tiers
    )
    return replace(plan, max_batch=current.max_batch, batch_window_ms=current.batch_window_ms, tiers=tiers)


def _with_replicas(c: Candidate, replicas: int) -> Candidate:
    """The candidate at another replica count: cost scales, tiers are split in the plan's proportions."""
    if replicas == c.replicas:
        return c
    tiers = _split(c.tiers, replicas)
    per = c.cost_per_hour / c.replicas if c.replicas else 0.0
    return replace(c, replicas=replicas, tiers=tiers, cost_per_hour=per * replicas)


def _split(tiers: tuple[TierConfig, ...], total: int) -> tuple[TierConfig, ...]:
    """Largest-remainder split of `total` replicas over tiers in proportion to the planned split."""
    if not tiers:
        return tiers
    planned = sum(t.replicas for t in tiers)
    weights = [t.replicas / planned if planned else 1.0 / len(tiers) for t in tiers]
    exact = [w * total for w in weights]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(tiers)), key=lambda i: exact[i] - counts[i], reverse=True)[
        : total - sum(counts)
    ]:
        counts[i] += 1
    if total >= len(tiers):  # every planned tier keeps at least one replica
        for i, t in enumerate(tiers):
            if t.replicas > 0 and counts[i] == 0:
                donor = max(range(len(tiers)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] = 1
    return tuple(replace(t, replicas=n) for t, n in zip(tiers, counts, strict=True))


def _keep(policy: SLOPolicySpec) -> float:
    return max(policy.scale_down_stabilization_seconds, policy.scale_up_stabilization_seconds) + 1e-6


def _stabilize(
    policy: SLOPolicySpec,
    current: int,
    recs: tuple[tuple[float, int], ...],
    now: float,
    last_scale: float | None,
    urgent: bool,
) -> int:
    """HPA-style: up to the lowest recommendation of the up window, down to the highest of the down window.
    An `urgent` window (a breach with requests queued, or more requests waiting than replicas ready, as when
    the router holds the first request of a service at zero) scales up at once: the up window filters a noisy
    rate, not a queue."""
    window = 0.0 if urgent else policy.scale_up_stabilization_seconds
    up = [r for t, r in recs if t > now - window - 1e-6] or [recs[-1][1]]
    down = [r for t, r in recs if t > now - policy.scale_down_stabilization_seconds - 1e-6]
    cooled = last_scale is None or now - last_scale >= policy.cooldown_seconds - 1e-6
    if min(up) > current:
        return min(min(up), current + policy.max_scale_up_step)
    if max(down) < current and cooled:
        return max(max(down), current - policy.max_scale_down_step)
    return current
