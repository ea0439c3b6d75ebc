"""The load the autoscaler plans for: current demand, recent peaks fading by age, and the observed token mix.

Plan for the largest of the current demand (arrivals plus the backlog, which should drain within one
interval: requests waiting in the workers and those the router holds, which a burst beyond the fleet piles up
in) and recent arrival peaks, fading by age; on on/off traffic peaks are first held for two scale-down windows,
so capacity for bursts stays standing while the pods that would serve them take minutes to start. The token mix
comes from the token-count histograms, averaged over windows by their requests, and with it the share of prompt
tokens the prefix cache served (their prefill is not computed: `policies/cached_prefill.py`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.cached_prefill import planned_share
from goodput.policies.types import Load, Observation, ScalerState

# Recent peaks halve every scale-down stabilization window and are forgotten after PEAK_FADE_WINDOWS. On on/off
# traffic (demand fell below ON_OFF_RATIO of a remembered peak within the hold) they are first held for
# PEAK_HOLD_WINDOWS: bursts recur after quiet gaps (up to ~5 minutes on the Azure code trace) faster than pods
# start. Smooth traffic is followed down without the hold.
PEAK_HOLD_WINDOWS = 2
PEAK_FADE_WINDOWS = 3
ON_OFF_RATIO = 0.25
STEADY_RATIO = 2.0  # a window whose rate moved by more than this factor since the previous one is not steady


def rate_steady(obs: Observation, state: ScalerState) -> bool:
    """Whether the rate stayed within STEADY_RATIO of the previous window's (the newest remembered point)."""
    if not state.load_history:
        return True
    t, before = state.load_history[-1]
    if obs.time - t > 2 * obs.window_s:  # no previous window to compare with
        return True
    return before <= STEADY_RATIO * obs.rps and obs.rps <= STEADY_RATIO * before


def token_mix(obs: Observation, state: ScalerState, policy: SLOPolicySpec) -> ScalerState:
    """The token mix as quantile nodes and the prefix cache's share of prompt tokens, averaged over windows weighted
    by their requests, older ones fading (a window without prefix-cache counters leaves the share as it was).

    A 15 s window holds a small, noisy sample; the weight of the past decays by the calibration smoothing
    each window, so the mix follows a real change within a few windows.
    """
    seen = (obs.prompt_tokens_nodes, obs.output_tokens_nodes)
    if obs.requests <= 0 or seen[0] is None or seen[1] is None:
        return state
    cached = obs.prefix_cache_hit_fraction
    old_p, old_o = state.prompt_tokens_nodes, state.output_tokens_nodes
    if old_p is None or old_o is None or len(old_p) != len(seen[0]) or len(old_o) != len(seen[1]):
        return replace(
            state,
            prompt_tokens_nodes=seen[0],
            output_tokens_nodes=seen[1],
            token_weight=obs.requests,
            cached_prompt_fraction=state.cached_prompt_fraction if cached is None else cached,
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
        cached_prompt_fraction=state.cached_prompt_fraction
        if cached is None
        else (1 - share) * state.cached_prompt_fraction + share * cached,
    )


def token_samples(state: ScalerState, hint: Load) -> tuple[np.ndarray, np.ndarray]:
    """Token samples for the planner: the observed quantile nodes (rounded to share plans), else the hints."""
    if state.prompt_tokens_nodes is None or state.output_tokens_nodes is None:
        return hint.prompt_tokens, hint.output_tokens

    def samples(nodes: tuple[float, ...]) -> np.ndarray:
        return np.array([max(1, int(float(f"{v:.2g}"))) for v in nodes], dtype=np.int64)

    return samples(state.prompt_tokens_nodes), samples(state.output_tokens_nodes)


class Anticipated(NamedTuple):
    """The load to plan for, the rates (rps) it comes from, and the state with this window remembered."""

    load: Load
    arrivals_rps: float  # completions plus the backlog's growth (`arrival_rate`)
    demand_rps: float  # arrivals plus the backlog, to drain within one interval
    anticipated_rps: float  # the larger of demand and the fading recent peaks
    state: ScalerState


def anticipated_load(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    obs: Observation,
    state: ScalerState,
    now: float,
) -> Anticipated:
    """The load to plan for: current demand, or a recent peak discounted by its age, whichever is larger.

    Demand counts arrivals plus the backlog (the workers' waiting requests and the router's queue), which
    should drain within one evaluation interval; the arrivals, not the drain, are remembered as a peak.
    """
    history = state.load_history
    arrivals = arrival_rate(obs, state, now)
    demand = arrivals + obs.backlog / max(policy.evaluation_interval_seconds, obs.window_s)
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
    prompts, outputs = token_samples(state, hint)
    load = Load(
        rps=rps,
        prompt_tokens=prompts,
        output_tokens=outputs,
        batch_fraction=_batch_fraction(obs, hint.batch_fraction),
        cached_prompt_fraction=planned_share(state.cached_prompt_fraction),
    )
    return Anticipated(
        load,
        arrivals,
        demand,
        anticipated,
        replace(
            state,
            load_history=remember(history, now, arrivals, policy),
            last_quiet=last_quiet,
            backlog=obs.backlog,
        ),
    )


def arrival_rate(obs: Observation, state: ScalerState, now: float) -> float:
    """Requests arriving per second: the completions plus the backlog's growth since the previous window.

    A backlog that drains completes more requests than arrive, one that builds fewer: counted as demand or
    remembered as a peak, completions plus the backlog would plan for the drain twice over (a flash crowd's
    backlog, once served, held three times the fleet the crowd needed for a scale-down window).
    """
    if not state.load_history:
        return obs.rps
    elapsed = now - state.load_history[-1][0]
    if elapsed <= 0 or elapsed > 2 * obs.window_s:  # no previous window to compare with
        return obs.rps
    return max(obs.rps + (obs.backlog - state.backlog) / elapsed, 0.0)


def _batch_fraction(obs: Observation, default: float) -> float:
    batch = obs.per_tier.get("batch")
    if batch is None or obs.requests <= 0:
        return default
    return min(max(batch.requests / obs.requests, 0.0), 1.0)


def remember(
    history: tuple[tuple[float, float], ...], now: float, rps: float, policy: SLOPolicySpec
) -> tuple[tuple[float, float], ...]:
    """`history` with this window's demand added, keeping only what the fading peak maximum can still use."""
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
