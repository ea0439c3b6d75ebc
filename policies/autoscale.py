"""The autoscaling policy the operator runs each control interval, and the simulator replays.

One decision per interval, from the planner at the load the service must be ready for:

1. Fresh metrics or hold: with no observation, or a stale one, hold the current plan (never scale down) and
   say metrics are unavailable. Zero traffic is an observation.
2. Calibrate: fold observed/predicted (TTFT p95, inter-token median) for the running configuration into
   EWMA correction factors (clamped, persisted in ScalerState), only from windows steady enough to compare
   with the model, and only by what the histogram buckets can resolve. The token mix comes from the
   token-count histograms, averaged over windows by their requests.
3. Budget: the share of first tokens later than the TTFT target over the last hour, against the 1 − attainment
   the SLO allows. Spending less than half of it lowers the headroom the plan keeps in proportion, in quarter
   steps (not on on/off traffic, whose misses come a burst at a time); late tokens bring it back.
4. Anticipate: plan for the largest of the current demand (completions plus the backlog, which should
   drain within one interval) and recent peaks, fading by age; on on/off traffic peaks are first held for
   two scale-down windows, so capacity for bursts stays standing while the pods that would serve them take
   minutes to start.
5. React: when the observed p95 breaches the SLO or requests queue up, scale at least in proportion.
6. Stabilize like the HPA: scale up to the lowest recommendation of the up window at once (up to the max
   step), scale down to the highest recommendation of the down window, at most max step, after a cooldown.
   A fresh autoscaler counts the plan for the manifest's expected rate as its first recommendation: the
   hint holds for one down window, or until a few windows of steady traffic show what the service needs.
7. Change accelerator or TP (a rollout) only when the predicted saving clears the policy's threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from crds.inferenceservice import InferenceServiceSpec
from crds.slopolicy import MissingMetrics, SLOPolicySpec
from policies import planner
from policies.catalog import accelerator
from policies.display import exceeds
from policies.latency import ReplicaPredictor, TokenStats
from policies.observe import ITL_BUCKETS, TTFT_BUCKETS
from policies.perfmodel import StepModel
from policies.profiles import profile_for
from policies.types import Candidate, Decision, Load, Observation, PlanResult, ScalerState, TierConfig

PlanFn = Callable[[InferenceServiceSpec, Load, SLOPolicySpec, float, float], PlanResult]

# Recent peaks halve every scale-down stabilization window and are forgotten after PEAK_FADE_WINDOWS. On on/off
# traffic (demand fell below ON_OFF_RATIO of a remembered peak within the hold) they are first held for
# PEAK_HOLD_WINDOWS: bursts recur after quiet gaps (up to ~5 minutes on the Azure code trace) faster than pods
# start. Smooth traffic is followed down without the hold.
PEAK_HOLD_WINDOWS = 2
PEAK_FADE_WINDOWS = 3
ON_OFF_RATIO = 0.25
# Error budget: the share of first tokens that missed the TTFT target, decayed with this time constant, against
# the 1 − attainment the SLO allows. Spending less than BUDGET_AIM of it lowers the headroom in proportion; the
# estimate starts as if BUDGET_PRIOR_MISSES misses had been seen exactly at the aim, so a new service plans with
# its full headroom until evidence accumulates.
BUDGET_HORIZON_S = 3600.0
BUDGET_AIM = 0.5
BUDGET_PRIOR_MISSES = 10.0
BUDGET_LEVELS = 4  # the headroom moves in quarters of the policy's (never below one), so services share plans
HINT_TRUST_WINDOWS = 8  # consecutive windows of steady traffic after which observations replace the hint
STEADY_RATIO = 2.0  # calibration skips a window whose rate moved by more than this factor since the previous
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
    tier = current.tier
    slo_ttft, slo_tpot = slo_targets(spec)

    stale = observation is None or now - observation.time > policy.stale_after_seconds
    if stale:
        age = "no metrics" if observation is None else f"metrics {now - observation.time:.0f} s old"
        if policy.missing_metrics == MissingMetrics.USE_HINTS and spec.traffic.expected_rps is not None:
            hinted = _feasible(
                plan_fn(spec, planner.load_from_spec(spec), policy, state.ttft_factor, state.tpot_factor)
            )
            if hinted is not None and hinted.replicas > current.replicas:
                target = _with_replicas(
                    hinted, min(hinted.replicas, current.replicas + policy.max_scale_up_step)
                )
                reason = f"scaled {tier} {current.replicas}→{target.replicas}: {age}, planned from spec hints"
                return Decision(target, replace(state, last_scale_time=now), "scale", reason, False, None)
        reason = f"holding {tier} at {current.replicas}: {age}, never scaling down without them"
        return Decision(current, state, "hold", reason, False, None)
    assert observation is not None
    obs = observation
    fresh = not state.recommendations and not state.load_history

    steady = obs.rps > 0 and _rate_steady(obs, state)
    state = replace(state, steady_windows=state.steady_windows + 1 if steady else 0)
    state = _token_mix(obs, state, policy)
    state = _calibrate(spec, policy, current, obs, state)
    state = _spend_budget(obs, state, policy)
    load, demand_rps, anticipated_rps, state = _anticipated_load(spec, policy, obs, state, now)
    state = replace(state, load_history=_remember(state.load_history, now, demand_rps, policy))

    headroom, spent = budgeted_headroom(spec, policy, state, now)
    planning = policy if headroom == policy.headroom else policy.model_copy(update={"headroom": headroom})
    result = plan_fn(spec, load, planning, state.ttft_factor, state.tpot_factor)
    planned = _choose(result, current, policy)
    limited = planned is None
    if planned is None:  # nothing meets the SLO at this load: run the largest fleet we may, if that can help
        planned = current if result.unservable else _with_replicas(current, spec.scaling.max_replicas)

    breach = _breach(obs, slo_ttft, slo_tpot)
    raw = planned.replicas
    reactive = ""
    if breach and obs.ready_replicas and not result.unservable:  # replicas cannot fix an unloaded miss
        ratio = max(
            (obs.ttft_p95_ms or 0.0) / slo_ttft if obs.ttft_p95_ms is not None else 0.0,
            (obs.tpot_p95_ms or 0.0) / slo_tpot if obs.tpot_p95_ms is not None else 0.0,
        )
        if obs.queue_depth and obs.queue_depth > 0:
            raw = max(raw, math.ceil(obs.ready_replicas * min(ratio, REACTIVE_MAX_RATIO)))
            reactive = breach
    raw = min(max(raw, spec.scaling.min_replicas), spec.scaling.max_replicas)

    seed = _hint_seed(spec, policy, state, now, plan_fn) if fresh else ()
    hint_time = seed[0][0] if seed else state.hint_time
    kept = [(t, r) for t, r in state.recommendations if t > now - _keep(policy)]
    if hint_time is not None and state.steady_windows >= HINT_TRUST_WINDOWS:
        kept = [(t, r) for t, r in kept if t > hint_time]  # steady traffic observed: it decides, not the hint
        hint_time = None
    if hint_time is not None and hint_time <= now - _keep(policy):
        hint_time = None
    recs = (*seed, *kept, (now, raw))
    state = replace(state, recommendations=recs, hint_time=hint_time)
    target = _stabilize(policy, current.replicas, recs, now, state.last_scale_time)
    target = min(max(target, spec.scaling.min_replicas), spec.scaling.max_replicas)

    slo_met = None if breach is None and obs.requests == 0 else breach is None
    rollout = (planned.accelerator, planned.tensor_parallel) != (current.accelerator, current.tensor_parallel)
    new_plan = _with_replicas(planned, target)
    if demand_rps <= 0 and not rollout:  # an idle window says nothing about batch size: keep the engine as is
        new_plan = _keep_knobs(new_plan, current)
    at = f"at {obs.rps:.3g} rps"
    if rollout:
        saving = 1.0 - planned.cost_per_hour / max(_cost_at(current, planned.replicas), 1e-9)
        reason = (
            f"rolling out {tier} to {planned.tensor_parallel}×{planned.accelerator} ×{target}: "
            f"predicted saving {saving:.0%} ≥ {policy.rollout_saving_threshold:.0%} {at}"
        )
        return Decision(new_plan, replace(state, last_scale_time=now), "rollout", reason, True, slo_met)
    if target != current.replicas:
        verb = "scaled"
        if reactive:
            why = reactive
        elif limited:
            why = f"no configuration meets the SLO at {anticipated_rps:.3g} rps (capacity limited)"
        elif target > current.replicas:
            why = f"planned for {anticipated_rps:.3g} rps{_budget_note(policy, headroom, spent)}"
        else:
            why = f"load fell to {demand_rps:.3g} rps for {policy.scale_down_stabilization_seconds:.0f} s"
        reason = f"{verb} {tier} {current.replicas}→{target}: {why} {at}"
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
        reason = f"{held}: planned for {anticipated_rps:.3g} rps{_budget_note(policy, headroom, spent)} {at}"
    return Decision(new_plan, state, "hold", reason, True, slo_met)


def _spend_budget(obs: Observation, state: ScalerState, policy: SLOPolicySpec) -> ScalerState:
    """Fold this window's first tokens, and those that missed the TTFT target, into the decayed budget counts.

    The operator's query window may be longer than the interval (a minute of `increase` every 15 s), so
    consecutive windows overlap: each counts for its new share, interval / window, and a token counts once.
    """
    if obs.ttft_met is None:
        return state
    met, seen = obs.ttft_met
    interval = policy.evaluation_interval_seconds
    share = min(interval / obs.window_s, 1.0)
    decay = math.exp(-interval / BUDGET_HORIZON_S)
    return replace(
        state,
        slo_seen=state.slo_seen * decay + share * seen,
        slo_missed=state.slo_missed * decay + share * max(seen - met, 0.0),
    )


def budgeted_headroom(
    spec: InferenceServiceSpec, policy: SLOPolicySpec, state: ScalerState, now: float
) -> tuple[float, float]:
    """The headroom to plan with, and the share of the TTFT error budget spent over the last hour.

    The SLO allows 1 − attainment of requests to miss. While the service spends less than BUDGET_AIM of that,
    capacity kept free is capacity it does not need: the headroom shrinks in proportion, rounded up to one of
    BUDGET_LEVELS steps so services share plans (each new headroom is a new plan to compute and cache).
    Spending the aim or more plans with the policy's full headroom.
    Not on on/off traffic (a quiet gap within the horizon): its misses come a burst at a time, so calm
    windows, however many requests they hold, say little about the next burst.
    """
    allowed = 1.0 - spec.slo.attainment
    prior_seen = BUDGET_PRIOR_MISSES / (BUDGET_AIM * allowed)
    spent = (state.slo_missed + BUDGET_PRIOR_MISSES) / ((state.slo_seen + prior_seen) * allowed)
    on_off = state.last_quiet is not None and now - state.last_quiet < BUDGET_HORIZON_S
    if not policy.adaptive_headroom or on_off:
        return policy.headroom, spent
    level = math.ceil(min(spent / BUDGET_AIM, 1.0) * BUDGET_LEVELS - 1e-9) / BUDGET_LEVELS
    return policy.headroom * level, spent


def _budget_note(policy: SLOPolicySpec, headroom: float, spent: float) -> str:
    if headroom == policy.headroom:
        return ""
    return f" with headroom {headroom:.2g} ({spent:.0%} of the TTFT error budget spent)"


def _hint_seed(
    spec: InferenceServiceSpec, policy: SLOPolicySpec, state: ScalerState, now: float, plan_fn: PlanFn
) -> tuple[tuple[float, int], ...]:
    """A fresh autoscaler's first recommendation: the replicas planned for the manifest's traffic hints, as
    if recommended the interval before its first observation, so they stand for one scale-down window, or
    until HINT_TRUST_WINDOWS windows of steady traffic have shown what the service needs."""
    if spec.traffic.expected_rps is None:
        return ()
    hinted = _feasible(
        plan_fn(spec, planner.load_from_spec(spec), policy, state.ttft_factor, state.tpot_factor)
    )
    if hinted is None:
        return ()
    return ((now - policy.evaluation_interval_seconds, hinted.replicas),)


def slo_targets(spec: InferenceServiceSpec) -> tuple[float, float]:
    (_, ttft), (_, tpot) = spec.slo.steering_targets()
    return ttft, tpot


def _breach(obs: Observation, slo_ttft: float, slo_tpot: float) -> str | None:
    """The readable breach, or None when both observed p95s meet their targets (or are unknown)."""
    if obs.ttft_p95_ms is not None and obs.ttft_p95_ms > slo_ttft:
        return f"TTFT p95 {exceeds(obs.ttft_p95_ms, slo_ttft)}"
    if obs.tpot_p95_ms is not None and obs.tpot_p95_ms > slo_tpot:
        return f"TPOT p95 {exceeds(obs.tpot_p95_ms, slo_tpot)}"
    return None


def _token_mix(obs: Observation, state: ScalerState, policy: SLOPolicySpec) -> ScalerState:
    """The token mix as quantile nodes, averaged over windows weighted by their requests, older ones fading.

    A 15 s window holds a small, noisy sample; the weight of the past decays by the calibration smoothing
    each window, so the mix follows a real change within a few windows.
    """
    seen = (obs.prompt_tokens_nodes, obs.output_tokens_nodes)
    if obs.requests <= 0 or seen[0] is None or seen[1] is None:
        return state
    old_p, old_o = state.prompt_tokens_nodes, state.output_tokens_nodes
    if old_p is None or old_o is None or len(old_p) != len(seen[0]) or len(old_o) != len(seen[1]):
        return replace(
            state, prompt_tokens_nodes=seen[0], output_tokens_nodes=seen[1], token_weight=obs.requests
        )
    w_old = state.token_weight * (1 - policy.calibration.smoothing)
    share = obs.requests / (w_old + obs.requests)

    def mix(old: tuple[float, ...], new: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(round((1 - share) * o + share * n, 1) for o, n in zip(old, new, strict=True))

    return replace(
        state,
        prompt_tokens_nodes=mix(old_p, seen[0]),
        output_tokens_nodes=mix(old_o, seen[1]),
        token_weight=w_old + obs.requests,
    )


def _tokens(state: ScalerState, hint: Load) -> tuple[np.ndarray, np.ndarray]:
    """Token samples for the planner: the observed quantile nodes (rounded to share plans), else the hints."""
    if state.prompt_tokens_nodes is None or state.output_tokens_nodes is None:
        return hint.prompt_tokens, hint.output_tokens

    def samples(nodes: tuple[float, ...]) -> np.ndarray:
        return np.array([max(1, int(float(f"{v:.2g}"))) for v in nodes], dtype=np.int64)

    return samples(state.prompt_tokens_nodes), samples(state.output_tokens_nodes)


def _anticipated_load(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    obs: Observation,
    state: ScalerState,
    now: float,
) -> tuple[Load, float, float, ScalerState]:
    """The load to plan for: current demand, or a recent peak discounted by its age, whichever is larger.

    Demand counts completions plus the backlog, which should drain within one evaluation interval.
    """
    history = state.load_history
    backlog = (obs.queue_depth or 0.0) / max(policy.evaluation_interval_seconds, obs.window_s)
    demand = obs.rps + backlog
    window = max(policy.scale_down_stabilization_seconds, policy.evaluation_interval_seconds)
    hold = PEAK_HOLD_WINDOWS * window
    # on/off traffic (a quiet gap under a remembered peak, recently): bursts recur, so hold their peaks
    fading = [r * 0.5 ** ((now - t) / window) for t, r in history]
    last_quiet = now if demand < ON_OFF_RATIO * max(fading, default=0.0) else state.last_quiet
    held = hold if last_quiet is not None and now - last_quiet <= hold else 0.0
    remembered = [r * 0.5 ** (max(now - t - held, 0.0) / window) for t, r in history]
    anticipated = max([demand, *remembered])
    hint = planner.load_from_spec(spec)
    # quantize upwards on a 5% grid, so nearby rates share a plan and rounding never under-provisions
    rps = 0.0 if anticipated <= 0 else 1.05 ** math.ceil(math.log(anticipated) / math.log(1.05))
    prompts, outputs = _tokens(state, hint)
    load = Load(
        rps=rps,
        prompt_tokens=prompts,
        output_tokens=outputs,
        batch_fraction=_batch_fraction(obs, hint.batch_fraction),
    )
    return load, demand, anticipated, replace(state, load_history=history, last_quiet=last_quiet)


def _batch_fraction(obs: Observation, default: float) -> float:
    batch = obs.per_tier.get("batch")
    if batch is None or obs.requests <= 0:
        return default
    return min(max(batch.requests / obs.requests, 0.0), 1.0)


def _remember(
    history: tuple[tuple[float, float], ...], now: float, rps: float, policy: SLOPolicySpec
) -> tuple[tuple[float, float], ...]:
    horizon = (PEAK_HOLD_WINDOWS + PEAK_FADE_WINDOWS) * max(
        policy.scale_down_stabilization_seconds, policy.evaluation_interval_seconds
    )
    kept = [(t, r) for t, r in history if t > now - horizon]
    # keep only points not dominated by a later, larger one: the decayed maximum never needs them
    kept.append((now, rps))
    out: list[tuple[float, float]] = []
    for t, r in reversed(kept):
        if not out or r > max(x for _, x in out):
            out.append((t, r))
    return tuple(reversed(out))


def _feasible(result: PlanResult) -> Candidate | None:
    return result.chosen if result.chosen is not None and result.chosen.feasible else None


def _choose(result: PlanResult, current: Candidate, policy: SLOPolicySpec) -> Candidate | None:
    """The planner's choice, unless it changes accelerator or TP for less than the rollout threshold saves."""
    best = _feasible(result)
    if best is None:
        return None
    same = (current.accelerator, current.tensor_parallel)
    if (best.accelerator, best.tensor_parallel) == same:
        return best
    stay = next(
        (
            c
            for c in (result.chosen, *result.alternatives)
            if c is not None and c.feasible and (c.accelerator, c.tensor_parallel) == same
        ),
        None,
    )
    if stay is None:
        return best
    saving = 1.0 - best.cost_per_hour / max(stay.cost_per_hour, 1e-9)
    return best if saving >= policy.rollout_saving_threshold else stay


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


def _cost_at(c: Candidate, replicas: int) -> float:
    return c.cost_per_hour / max(c.replicas, 1) * replicas


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
) -> int:
    """HPA-style: up to the lowest recommendation of the up window, down to the highest of the down window."""
    up = [r for t, r in recs if t > now - policy.scale_up_stabilization_seconds - 1e-6] or [recs[-1][1]]
    down = [r for t, r in recs if t > now - policy.scale_down_stabilization_seconds - 1e-6]
    cooled = last_scale is None or now - last_scale >= policy.cooldown_seconds - 1e-6
    if min(up) > current:
        return min(min(up), current + policy.max_scale_up_step)
    if max(down) < current and cooled:
        return max(max(down), current - policy.max_scale_down_step)
    return current


def _calibrate(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
) -> ScalerState:
    """EWMA of observed/predicted for the running configuration, from steady windows only.

    A window counts when it holds enough requests and is steady (no backlog, the rate close to the previous
    window's): then TTFT is window plus prefill and TPOT is the step time, which is what the factors correct;
    queueing transients of a burst are not model error. A TTFT breach is overload, the reactive path's
    business, so TTFT learns only from windows that meet the SLO. TPOT learns from a breach too: without a
    queue a slow decode step is the model's error, and it is how a breach that no queue signals (a batch too
    large for the TPOT target) reaches the plan, which then runs smaller batches on more replicas.
    TTFT calibrates on its p95; TPOT on the inter-token median, because the factor scales decode-only steps
    and the p95 of inter-token gaps is the prefill-chunk steps'.
    """
    cal = policy.calibration
    ready = obs.ready_replicas or current.replicas
    if not cal.enabled or obs.requests < cal.min_requests or ready <= 0:
        return state
    if not _steady(obs, state, ready):
        return state
    predicted = _predict(spec, current, obs, state, obs.rps / ready)
    if predicted is None:
        return state
    ttft_pred, tpot_pred = predicted

    def update(factor: float, observed: float | None, pred: float, bounds: tuple[float, ...]) -> float:
        if observed is None or not math.isfinite(pred) or pred <= 0:
            return factor
        ratio = bucket_ratio(observed, pred, bounds)
        new = (1 - cal.smoothing) * factor + cal.smoothing * factor * ratio
        return min(max(new, cal.min_factor), cal.max_factor)

    slo_ttft, _ = slo_targets(spec)
    ttft = obs.ttft_p95_ms if obs.ttft_p95_ms is not None and obs.ttft_p95_ms <= slo_ttft else None
    if ttft is None and obs.tpot_p50_ms is None:
        return state
    return replace(
        state,
        ttft_factor=update(state.ttft_factor, ttft, ttft_pred, TTFT_BUCKETS),
        tpot_factor=update(state.tpot_factor, obs.tpot_p50_ms, tpot_pred, ITL_BUCKETS),
        calibration_samples=state.calibration_samples + 1,
    )


def _steady(obs: Observation, state: ScalerState, ready: int) -> bool:
    """Whether a window shows the steady state the model predicts, so its error is the model's.

    Not when requests queue, or when the rate moved by more than STEADY_RATIO since the previous window: the
    TTFTs of a burst's aftermath, or of clustered arrivals, are not what a Poisson model at the window's mean
    rate predicts.
    """
    if (obs.queue_depth or 0.0) > ready:
        return False
    return _rate_steady(obs, state)


def _rate_steady(obs: Observation, state: ScalerState) -> bool:
    """Whether the rate stayed within STEADY_RATIO of the previous window's (the newest remembered point)."""
    if not state.load_history:
        return True
    t, before = state.load_history[-1]
    if obs.time - t > 2 * obs.window_s:  # no previous window to compare with
        return True
    return before <= STEADY_RATIO * obs.rps and obs.rps <= STEADY_RATIO * before


def bucket_ratio(observed_ms: float, predicted_ms: float, bounds_s: tuple[float, ...]) -> float:
    """observed/predicted as far as a histogram can tell: 1 when the prediction lies in the observed bucket.

    `histogram_quantile` interpolates inside a bucket, so an observed p95 is only known to lie between the
    bucket's bounds; a prediction inside them is consistent, one outside is off by at least the distance to
    the nearer bound. Without this, coarse buckets (10-25 ms for inter-token latency) would read as model error.
    """
    edges = (0.0, *(b * 1000.0 for b in bounds_s), math.inf)
    i = next(k for k in range(1, len(edges)) if observed_ms <= edges[k])
    lo, hi = edges[i - 1], edges[i]
    if predicted_ms < lo:
        return lo / predicted_ms
    if predicted_ms > hi:
        return hi / predicted_ms
    return 1.0


def _predict(
    spec: InferenceServiceSpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
    rps_per_replica: float,
) -> tuple[float, float] | None:
    """Predicted TTFT p95 and inter-token p50 (ms) of the running configuration at the observed rate."""
    hint = planner.load_from_spec(spec)
    prompts, outputs = _tokens(state, hint)
    model = StepModel(
        profile_for(spec.model),
        accelerator(current.accelerator),
        current.tensor_parallel,
        state.ttft_factor,
        state.tpot_factor,
    )
    predictor = ReplicaPredictor(
        model, TokenStats.from_samples(prompts, outputs), current.chunk_tokens, current.max_batch
    )
    p = predictor.predict(
        np.array([[max(rps_per_replica, 1e-6)]]),
        np.array([current.max_batch]),
        np.array([current.batch_window_ms / 1000.0]),
        tpot_quantile=0.5,
    )
    ttft, tpot = float(p.ttft.ravel()[0]), float(p.tpot.ravel()[0])
    if not (math.isfinite(ttft) and math.isfinite(tpot)):
        return None
    return ttft * 1000.0, tpot * 1000.0
