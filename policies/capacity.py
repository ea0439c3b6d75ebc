"""Learned capacity: what the running configuration really carries at the SLO, learned from what it serves.

The performance model predicts a replica's TTFT quantile as a function of its request rate. It is right about
the shape (latency flat at light load, rising steeply towards saturation) more often than about where the knee
is: a queueing approximation that errs on the safe side, a token mix the model weighs differently, a kernel
faster than its roofline all move the knee. So the autoscaler keeps the model and learns one number per
configuration (accelerator and TP): the factor k by which the rate axis is off. A replica at per-replica rate
λ behaves as the model does at λ / k; k = 2 means a replica carries twice what the model says.

Each steady window with enough requests is evidence (policies/calibration.py's steady_window: its rate near
the previous window's, no queue to speak of), judged at the token mix it served (`at_window_mix`). The observed
TTFT at the SLO's quantile (interpolated by `histogram_quantile`) is matched to the rate λ' at which the model
predicts it, so the window says k ≈ λ / λ'; as the observation is only known to lie in its histogram bucket
(lo, hi], the rates whose prediction lies in that bucket bound it: k in [λ / λ'_hi, λ / λ'_lo]. The learned k
moves towards that estimate (a geometric EWMA with the calibration's smoothing), by at most MAX_STEP a window.
Where the model's curve is flat (queueing adds under a quarter to the unloaded latency) a small latency error
is a large rate error, so such windows only bound k from below; in a bucket wider than NARROW_BUCKET the
interpolated point lowers k only as far as the bucket's bound demands (it assumes latencies spread evenly over
the bucket). k is lowered only by windows whose TTFT p95 is at least NEAR_TARGET of the SLO's target: far below
it, latency above the model's is mostly arrival clustering the Poisson model does not see (bursty traffic), and
extrapolating it to the knee would add replicas that do not lower it, a feedback that runs to the bound.
k is raised only while the service keeps within its TTFT error budget (policies/budget.py): the windows that
teach are those without a queue, and on a heavy-tailed mix the misses are in the others, so the calm windows
that are left would all say a replica carries more and k would rise while the SLO is missed (on the on/off
long-context workload it rose from 1.05 to 1.8 at 97.4 % attainment).
Planning divides the load by k, quantized to the same 5 % grid as rates so plans stay shared.
The TTFT it matches is the one clients see: behind a router, the router's (arrival to first byte), as the
simulator times it. The router holds what every replica's bound refuses, so the workers' TTFT starts after a
queue that the model, which queues at the replica, counts; the workers' would say a replica carries more than
the fleet does at the SLO.

The factor is read off the model's curve where the service runs, and the curve's shape is not the truth's: at
light load a replica's latency is its prefill and the batching around it, at the knee it is the queue. Evidence
from windows far below the knee can say a replica carries half again more than the model, where near the knee
it carries less (a mix of long outputs: two replicas at 15 rps each met a 1 s target at 100 ms, and the factor
of 1.6 that said one would carry 29 rps sent it into a queue of 64). So the learned factor is trusted only
near the loads it was seen at: each configuration remembers the highest per-replica load that a streak of
windows on one fleet, enough requests in all, was planned for and served within the SLO (`prove_load`), and a
plan that divides the load by k > 1 keeps at least the replicas that hold each below TRUST_STEP times it
(`proven_floor`), never more than the model alone would plan. A fleet that shrinks under a steady load
explores a step at a time: each step proves the next.

The TTFT and TPOT calibration factors (policies/calibration.py) stay: they correct the latency axis (a slower
prefill or decode step), this corrects the rate axis.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.budget import budget_spent
from goodput.policies.calibration import (
    QUEUEING_SHARE,
    UNLOADED_RPS,
    at_window_mix,
    running_predictor,
    steady_window,
)
from goodput.policies.observe import TTFT_BUCKETS
from goodput.policies.types import Candidate, Observation, ScalerState, Streak

NEAR_TARGET = 0.5  # the factor is lowered only by windows whose TTFT p95 reaches this share of the SLO
CAPACITY_BOUNDS = (0.25, 4.0)  # the model is trusted to within a factor of four either way
GRID_RATES = 64  # model rates the equivalent load is read off, up to the replica's saturation
GRID_STEP = 1.05  # the learned factor is applied on the same 5 % grid as planned rates
MAX_STEP = (
    1.1  # one window moves the factor by at most 10 %: an outlier nudges it, evidence that repeats moves it
)
RAISE_WITHIN_BUDGET = 1.0  # k rises only while the hour's TTFT misses stay within what the SLO allows
TRUST_STEP = 1.5  # a plan raises a replica's load at most half again above the highest proven within the SLO
NARROW_BUCKET = (
    1.5  # a quantile interpolated in a bucket wider than ×1.5 (top/bottom) lowers k only by its bound
)


def configuration(c: Candidate) -> str:
    """The configuration a learned factor belongs to."""
    return f"{c.accelerator}/tp{c.tensor_parallel}"


def capacity_factor(state: ScalerState, c: Candidate) -> float:
    """The learned factor for `c`'s configuration (1 until learned), on the 5 % grid planning uses."""
    k = dict((key, f) for key, f, _ in state.capacity).get(configuration(c), 1.0)
    return GRID_STEP ** round(math.log(k) / math.log(GRID_STEP))


def learn_capacity(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
) -> ScalerState:
    """Move the running configuration's factor towards what this window's rate and TTFT quantile allow."""
    cal = policy.calibration
    ready = obs.ready_replicas or current.replicas
    observed = obs.client_ttft_p95_ms  # behind a router its queue is part of what a replica carries
    if not cal.enabled or obs.requests < cal.min_requests or ready <= 0 or observed is None:
        return state
    if spec.slo.ttft_p95_ms is None or not steady_window(obs, state, ready):
        return (
            state  # learned at the quantile the SLO states; only p95 is observed (see docs/architecture.md)
        )
    key = configuration(current)
    learned = {k: (f, n) for k, f, n in state.capacity}
    k, samples = learned.get(key, (1.0, 0))
    rates = equivalent_rates(spec, current, at_window_mix(obs, state), observed)
    if rates is None:
        return state
    lam = obs.rps / ready
    lo_rate, point, hi_rate, wide = rates
    lower = lam / hi_rate
    upper = lam / lo_rate if lo_rate > 0 else math.inf
    # on the flat part of the curve the point says little, and in a wide bucket it lowers k only by its bound
    estimate = k if point is None else lam / point
    aim = min(max(k if wide and estimate < k else estimate, lower), upper)
    if aim < k and observed < NEAR_TARGET * spec.slo.ttft_p95_ms:
        return state  # far below the target, extrapolating the model's curve down is not safe (see above)
    if aim > k and budget_spent(spec, state) >= RAISE_WITHIN_BUDGET:
        return state  # the misses are in the windows that cannot teach (see above): no more load per replica
    new = k ** (1 - cal.smoothing) * aim**cal.smoothing
    new = min(max(new, k / MAX_STEP, CAPACITY_BOUNDS[0]), k * MAX_STEP, CAPACITY_BOUNDS[1])
    learned[key] = (new, samples + 1)
    return replace(state, capacity=tuple((name, f, n) for name, (f, n) in sorted(learned.items())))


def equivalent_rates(
    spec: InferenceServiceSpec, current: Candidate, state: ScalerState, observed_ms: float
) -> tuple[float, float | None, float, bool] | None:
    """The per-replica rates at which the model predicts the observed TTFT p95: (low, point, high), and
    whether the observation's bucket is wide.

    `histogram_quantile` only places the observation in its bucket (lo, hi]: low and high bound the rates
    whose prediction lies in it; the point is where the prediction equals the interpolated value, None where
    the model's curve is flat there (within QUEUEING_SHARE of its unloaded value). None in all when the model,
    even unloaded, predicts more than the bucket's top: that is a latency error (the TTFT calibration's
    business), not a capacity one.
    """
    edges = (0.0, *(b * 1000.0 for b in TTFT_BUCKETS), math.inf)
    i = next(j for j in range(1, len(edges)) if observed_ms <= edges[j])
    lo, hi = edges[i - 1], edges[i]
    predictor = running_predictor(spec, current, state)
    batch = np.array([current.max_batch])
    saturation = float(predictor.saturation_rps(batch)[0])
    rates = saturation * np.arange(0, GRID_RATES + 1) / GRID_RATES
    rates[0] = UNLOADED_RPS
    ttft = predictor.predict(rates[None, :], batch, np.array([current.batch_window_ms / 1000.0])).ttft.ravel()
    ttft_ms = np.where(np.isfinite(ttft), ttft * 1000.0, math.inf)
    if ttft_ms[0] > hi:
        return None
    below = rates[ttft_ms <= lo]  # the model's latency is monotone in the rate
    within = rates[ttft_ms <= hi]
    finite = np.isfinite(ttft_ms)
    point = float(np.interp(observed_ms, ttft_ms[finite], rates[finite]))
    flat = observed_ms <= QUEUEING_SHARE * ttft_ms[0] or observed_ms > ttft_ms[finite][-1]
    low, high = float(below[-1]) if len(below) else 0.0, float(within[-1])
    return low, None if flat else point, high, hi > NARROW_BUCKET * lo


def prove_load(
    policy: SLOPolicySpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
    met: bool,
    planned_rps: float,
) -> ScalerState:
    """`state` with this interval added to the streak of intervals within the SLO on the running fleet; once
    the streak holds the calibration's min_requests, the busiest load it was planned for (`planned_rps`:
    demand and the recent peaks the plan anticipates), per replica, raises the configuration's proven rate.

    A sparse service's windows each hold too few requests for a p95; a streak of them does. The proven rate is
    the planned load, not the window's rate, because a plan is held against it: at 3 rps, 15 s windows vary by
    a third, and a busy window's rate against a streak's calm ones kept a replica the learned factor had
    rightly shed."""
    ready = obs.ready_replicas or current.replicas
    if not met or ready <= 0 or obs.client_ttft_p95_ms is None:
        return replace(state, streak=None)
    key = configuration(current)
    interval = min(policy.evaluation_interval_seconds, obs.window_s)  # overlapping windows count once
    s = state.streak
    if s is None or (s.configuration, s.replicas) != (key, ready):
        s = Streak(key, ready, 0.0, 0.0)
    s = Streak(key, ready, s.requests + obs.requests * interval / obs.window_s, max(s.peak_rps, planned_rps))
    if s.requests < policy.calibration.min_requests:
        return replace(state, streak=s)
    proven = dict(state.proven)
    proven[key] = max(s.peak_rps / ready, proven.get(key, 0.0))
    return replace(state, streak=None, proven=tuple(sorted(proven.items())))


def proven_floor(state: ScalerState, c: Candidate, planned_rps: float) -> int | None:
    """The fewest replicas of `c`'s configuration that keep the load planned for within TRUST_STEP of its
    proven rate per replica (None until a streak has proven one)."""
    proven = dict(state.proven).get(configuration(c))
    return None if proven is None else math.ceil(planned_rps / (TRUST_STEP * proven) - 1e-9)
