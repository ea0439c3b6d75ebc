"""The SLO's error budget: how much of the TTFT misses the SLO allows the service has spent, and the headroom
the plan keeps for it.

The share of first tokens later than the TTFT target over the last hour, against the 1 − attainment the SLO
allows. Spending less than half of it lowers the headroom the plan keeps in proportion, in quarter steps (not on
on/off traffic, whose misses come a burst at a time); late tokens bring it back. On on/off traffic, spending more
than half raises it, up to planning to (1 − headroom)² of capacity when the whole budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import replace

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.types import Observation, ScalerState

# The share of first tokens that missed the TTFT target, decayed with this time constant, against the
# 1 − attainment the SLO allows. Spending less than BUDGET_AIM of it lowers the headroom in proportion; the
# estimate starts as if BUDGET_PRIOR_MISSES misses had been seen exactly at the aim, so a new service plans with
# its full headroom until evidence accumulates.
BUDGET_HORIZON_S = 3600.0
BUDGET_AIM = 0.5
BUDGET_PRIOR_MISSES = 10.0
BUDGET_LEVELS = 4  # the headroom moves in quarters of the policy's (never below one), so services share plans


def spend_budget(obs: Observation, state: ScalerState, policy: SLOPolicySpec) -> ScalerState:
    """Fold this window's first tokens, and those that missed the TTFT target, into the decayed budget counts
    (as clients see them: behind a router, its timing, queue included).

    The operator's query window may be longer than the interval (a minute of `increase` every 15 s), so
    consecutive windows overlap: each counts for its new share, interval / window, and a token counts once.
    """
    if obs.client_ttft_met is None:
        return state
    met, seen = obs.client_ttft_met
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
    windows, however many requests they hold, say little about the next burst, and the hour's budget is the
    one measure of whether bursts are served. There, spending more than the aim raises the headroom: the free
    share (1 − headroom) is raised to the power spent / aim, in the same quarter steps, up to its square when
    the whole budget is spent (0.2 becomes at most 0.36).
    """
    spent = budget_spent(spec, state)
    on_off = state.last_quiet is not None and now - state.last_quiet < BUDGET_HORIZON_S
    if not policy.adaptive_headroom:
        return policy.headroom, spent
    if on_off:
        level = _level(min(max(spent / BUDGET_AIM, 1.0), 1.0 / BUDGET_AIM))
        return 1.0 - (1.0 - policy.headroom) ** level, spent
    return policy.headroom * _level(min(spent / BUDGET_AIM, 1.0)), spent


def budget_spent(spec: InferenceServiceSpec, state: ScalerState) -> float:
    """The share of the TTFT error budget spent over the last hour (1 = all the misses the SLO allows)."""
    allowed = 1.0 - spec.slo.attainment
    prior_seen = BUDGET_PRIOR_MISSES / (BUDGET_AIM * allowed)
    return (state.slo_missed + BUDGET_PRIOR_MISSES) / ((state.slo_seen + prior_seen) * allowed)


def _level(ratio: float) -> float:
    """`ratio` rounded up to the next of the BUDGET_LEVELS steps per unit."""
    return math.ceil(ratio * BUDGET_LEVELS - 1e-9) / BUDGET_LEVELS


def budget_note(policy: SLOPolicySpec, headroom: float, spent: float) -> str:
    """The reason's suffix when the budget lowered the headroom; empty at the policy's own."""
    if headroom == policy.headroom:
        return ""
    return f" with headroom {headroom:.2g} ({spent:.0%} of the TTFT error budget spent)"
