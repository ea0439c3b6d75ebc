"""The latency-throughput frontier of one planned configuration: what `goodput plan --plot` and `explain` draw.

The planner picks one point on it; this module traces the whole curve, from light load to saturation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goodput.crds.inferenceservice import InferenceServiceSpec, Tier
from goodput.policies.cached_prefill import token_stats
from goodput.policies.catalog import accelerator, price_of
from goodput.policies.latency import ReplicaPredictor
from goodput.policies.perfmodel import StepModel
from goodput.policies.planner import CHUNK_TOKENS, tier_shares
from goodput.policies.profiles import profile_for
from goodput.policies.types import Candidate, Load


@dataclass(frozen=True)
class Frontier:
    """Predicted tails of one candidate's first tier as its per-replica rate grows to saturation."""

    label: str
    rps: np.ndarray  # per replica
    ttft_p95_ms: np.ndarray
    tpot_p95_ms: np.ndarray
    replica_cost_per_hour: float
    planned_rps: float  # the per-replica rate the plan runs at


def frontier(
    spec: InferenceServiceSpec,
    load: Load,
    candidate: Candidate,
    points: int = 40,
    ttft_factor: float = 1.0,
    tpot_factor: float = 1.0,
) -> Frontier:
    """The latency–throughput curve of `candidate`'s configuration: the trade-off the planner navigates."""
    pool = next(p for p in spec.accelerators if p.type == candidate.accelerator)
    profile = profile_for(spec.model)
    model = StepModel(profile, accelerator(pool.type), candidate.tensor_parallel, ttft_factor, tpot_factor)
    tier = candidate.tiers[0]
    tokens = token_stats(load)
    predictor = ReplicaPredictor(model, tokens, CHUNK_TOKENS[Tier(tier.tier)], tier.max_batch)
    batch = np.array([tier.max_batch])
    saturation = float(predictor.saturation_rps(batch)[0])
    rates = saturation * np.linspace(0.02, 0.99, points)
    p = predictor.predict(rates[None, :], batch, np.array([tier.batch_window_ms / 1000]))
    share = tier_shares(spec, load)[0][1]
    return Frontier(
        label=f"{candidate.accelerator} TP{candidate.tensor_parallel} B{tier.max_batch} W{tier.batch_window_ms:g}ms",
        rps=rates,
        ttft_p95_ms=p.ttft[0, 0] * 1000,
        tpot_p95_ms=p.tpot[0] * 1000,
        replica_cost_per_hour=price_of(pool) * candidate.tensor_parallel,
        planned_rps=share / tier.replicas if tier.replicas else 0.0,
    )
