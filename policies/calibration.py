"""Calibration: the performance model's error on the running configuration, folded into correction factors.

EWMA of observed/predicted (TTFT p95, inter-token median) for the running configuration, clamped and persisted
in ScalerState, only from windows steady enough to compare with the model, and only by what the histogram
buckets can resolve.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.cached_prefill import cached_token_stats, planned_share
from goodput.policies.catalog import accelerator
from goodput.policies.demand import rate_steady, token_samples
from goodput.policies.latency import ReplicaPredictor
from goodput.policies.observe import ITL_BUCKETS, TTFT_BUCKETS
from goodput.policies.perfmodel import StepModel
from goodput.policies.profiles import profile_for
from goodput.policies.types import Candidate, Observation, ScalerState

QUEUEING_SHARE = 1.25  # TTFT calibrates from windows predicted within this factor of the unloaded p95
UNLOADED_RPS = 1e-3  # per replica: the rate the unloaded prediction is made at


def calibrate(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
    slo_ttft_ms: float,
) -> ScalerState:
    """EWMA of observed/predicted for the running configuration, from steady windows only.

    A window counts when it holds enough requests and is steady (no backlog, the rate close to the previous
    window's): then TTFT is window plus prefill and TPOT is the step time, which is what the factors correct;
    queueing transients of a burst are not model error. A TTFT breach is overload, the reactive path's
    business, so TTFT learns only from windows that meet the SLO. TPOT learns from a breach too: without a
    queue a slow decode step is the model's error, and it is how a breach that no queue signals (a batch too
    large for the TPOT target) reaches the plan, which then runs smaller batches on more replicas.
    TTFT calibrates on its p95 where the model says queueing adds little to it (predicted within
    QUEUEING_SHARE of the unloaded p95), or where the replica is faster than the model unloaded; elsewhere the
    error is where the knee lies, which the learned capacity corrects on the rate axis: the two never correct
    the same window. Both compare the window with the model at the tokens it served (`at_window_mix`).
    TPOT calibrates on the inter-token median, because the factor scales decode-only steps and the p95 of
    inter-token gaps is the prefill-chunk steps'.
    """
    cal = policy.calibration
    ready = obs.ready_replicas or current.replicas
    if not cal.enabled or obs.requests < cal.min_requests or ready <= 0:
        return state
    if not steady_window(obs, state, ready):
        return state
    model_state = at_window_mix(obs, state)
    predicted = predict(spec, current, obs, model_state, obs.rps / ready)
    if predicted is None:
        return state
    ttft_pred, tpot_pred = predicted
    unloaded = predict(spec, current, obs, model_state, UNLOADED_RPS)

    def update(factor: float, observed: float | None, pred: float, bounds: tuple[float, ...]) -> float:
        if observed is None or not math.isfinite(pred) or pred <= 0:
            return factor
        ratio = bucket_ratio(observed, pred, bounds)
        new = (1 - cal.smoothing) * factor + cal.smoothing * factor * ratio
        return min(max(new, cal.min_factor), cal.max_factor)

    # near the knee the error is the capacity learner's (policies/capacity.py), unless faster than the
    # model unloaded (no knee explains that)
    seen = obs.ttft_p95_ms if obs.ttft_p95_ms is not None else math.inf
    latency_bound = unloaded is not None and (ttft_pred <= QUEUEING_SHARE * unloaded[0] or seen < unloaded[0])
    ttft = obs.ttft_p95_ms if obs.ttft_p95_ms is not None and obs.ttft_p95_ms <= slo_ttft_ms else None
    ttft = ttft if latency_bound else None
    if ttft is None and obs.tpot_p50_ms is None:
        return state
    return replace(
        state,
        ttft_factor=update(state.ttft_factor, ttft, ttft_pred, TTFT_BUCKETS),
        tpot_factor=update(state.tpot_factor, obs.tpot_p50_ms, tpot_pred, ITL_BUCKETS),
        calibration_samples=state.calibration_samples + 1,
    )


def steady_window(obs: Observation, state: ScalerState, ready: int) -> bool:
    """Whether a window shows the steady state the model predicts, so its error is the model's.

    Not when requests queue (in the workers or in the router, which holds them while every replica is at its
    bound), or when the rate moved by more than STEADY_RATIO since the previous window: the TTFTs of a burst's
    aftermath, or of clustered arrivals, are not what a Poisson model at the window's mean rate predicts.
    """
    if obs.backlog > ready:
        return False
    return rate_steady(obs, state)


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


def at_window_mix(obs: Observation, state: ScalerState) -> ScalerState:
    """`state` with the window's own token mix and prefix-cache share, where the window observed them.

    A window is compared with the model at the tokens it served: its TTFT p95 is often its longest prompts'
    prefill (a 15 s window of long-context traffic holds a few dozen requests), and judged against the
    smoothed mix such a window reads as a knee that more replicas would not move.
    """
    prompts, outputs = obs.prompt_tokens_nodes, obs.output_tokens_nodes
    if prompts is None or outputs is None:
        return state
    cached = obs.prefix_cache_hit_fraction
    return replace(
        state,
        prompt_tokens_nodes=prompts,
        output_tokens_nodes=outputs,
        cached_prompt_fraction=state.cached_prompt_fraction if cached is None else cached,
    )


def running_predictor(spec: InferenceServiceSpec, current: Candidate, state: ScalerState) -> ReplicaPredictor:
    """The model of one replica of the running configuration, calibrated, at the observed token mix."""
    prompts, outputs = token_samples(state, planner.load_from_spec(spec))
    model = StepModel(
        profile_for(spec.model),
        accelerator(current.accelerator),
        current.tensor_parallel,
        state.ttft_factor,
        state.tpot_factor,
    )
    tokens = cached_token_stats(prompts, outputs, planned_share(state.cached_prompt_fraction))
    return ReplicaPredictor(model, tokens, current.chunk_tokens, current.max_batch)


def predict(
    spec: InferenceServiceSpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
    rps_per_replica: float,
) -> tuple[float, float] | None:
    """Predicted TTFT p95 and inter-token p50 (ms) of the running configuration at the observed rate."""
    p = running_predictor(spec, current, state).predict(
        np.array([[max(rps_per_replica, 1e-6)]]),
        np.array([current.max_batch]),
        np.array([current.batch_window_ms / 1000.0]),
        tpot_quantile=0.5,
    )
    ttft, tpot = float(p.ttft.ravel()[0]), float(p.tpot.ravel()[0])
    if not (math.isfinite(ttft) and math.isfinite(tpot)):
        return None
    return ttft * 1000.0, tpot * 1000.0
