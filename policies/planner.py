"""The SLO planner: the cheapest fleet predicted to meet the p95 targets at the offered load.

Search: accelerator pool × tensor parallel (1, 2, 4, 8 within maxTensorParallel, the node and the pool) ×
max batch × batch window (the policy's tier window range) × tier, and for each the fewest replicas.

Replicas: for a configuration the predictor gives its *SLO capacity*, the highest per-replica rate whose
predicted tails still meet the targets. Headroom h from the SLOPolicy keeps a share of it free:
replicas = ceil(rate / ((1 − h) · capacity)), so "headroom 0.2 plans to 80%" of what the SLO allows, and the
reported p95s are those at the planned per-replica rate. Mixed traffic gets an interactive and a batch tier,
each sized for its share of the rate with its own window range and chunk size, on the same accelerator.

Targets: the p95 TTFT/TPOT targets (and the p99 ones when set) are planned to directly; `attainment` is what
the operator measures against them, not a planning input.

Rejections, in the order they are checked: memory (weights plus a full batch of KV do not fit), ttft / tpot
(no rate meets the target), max_count (more devices than the pool allows), max_replicas, budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from statistics import NormalDist

import numpy as np

from goodput.crds.inferenceservice import SLO, AcceleratorPool, InferenceServiceSpec, Tier, TrafficClass
from goodput.crds.slopolicy import SLOPolicySpec, WindowRange
from goodput.policies.cached_prefill import token_stats
from goodput.policies.catalog import accelerator, price_of
from goodput.policies.display import exceeds
from goodput.policies.latency import ReplicaPredictor, TokenStats
from goodput.policies.perfmodel import StepModel
from goodput.policies.profiles import ModelProfile, profile_for
from goodput.policies.types import Candidate, Load, PlanResult, TierConfig
from goodput.policies.workloads import load_trace

TENSOR_PARALLEL = (1, 2, 4, 8)
MAX_BATCHES = (8, 16, 32, 64, 128, 256)
CHUNK_TOKENS = {Tier.INTERACTIVE: 512, Tier.BATCH: 2048}  # prefill tokens per step: latency vs throughput
SLOT_LIMIT = 0.5  # most batch-slot occupancy planned: beyond it the predictor underestimates slot queueing
DEFAULT_PROMPT = (512, 2048)  # (p50, p95) tokens when the manifest gives no hint
DEFAULT_OUTPUT = (128, 512)
DEFAULT_RPS = 1.0
SAMPLES = 4096
COARSE = np.geomspace(1e-3, 1.0, 20)  # rate grid, as shares of an upper bound of the saturation rate
FINE = 10


@dataclass(frozen=True)
class Targets:
    """SLO targets in seconds, each at its quantile (p95 targets, else the p99 ones)."""

    ttft: tuple[tuple[float, float], ...]  # (quantile, seconds)
    tpot: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, slo: SLO) -> Targets:
        return cls(*(tuple((q, ms / 1000) for q, ms in slo.targets(key)) for key in ("ttft", "tpot")))

    @property
    def quantiles(self) -> tuple[float, ...]:
        return tuple(sorted({q for q, _ in self.ttft + self.tpot} | {0.95}))


@dataclass(frozen=True)
class TierSizing:
    """The best (max batch, window) of one tier on one (accelerator, TP), and the replicas it needs."""

    config: TierConfig
    capacity_rps: float  # SLO capacity of one replica
    ttft_p95_s: float  # predicted at the planned per-replica rate
    tpot_p95_s: float
    utilisation: float
    rejected: str | None


# ---------------------------------------------------------------- load


def lognormal_samples(p50: float, p95: float, count: int = SAMPLES) -> np.ndarray:
    """Deterministic token lengths with the given median and 95th percentile (quantiles of a lognormal)."""
    sigma = math.log(max(p95, p50) / p50) / NormalDist().inv_cdf(0.95)
    return np.maximum(np.rint(p50 * np.exp(sigma * _normal_quantiles(count))), 1).astype(np.int64)


@cache
def _normal_quantiles(count: int) -> np.ndarray:
    normal = NormalDist()
    return np.array([normal.inv_cdf((i + 0.5) / count) for i in range(count)])


def load_from_spec(spec: InferenceServiceSpec) -> Load:
    """The cold-start load from the manifest's traffic hints (documented defaults where absent)."""
    traffic = spec.traffic
    prompt = (
        (traffic.prompt_tokens.p50, traffic.prompt_tokens.p95) if traffic.prompt_tokens else DEFAULT_PROMPT
    )
    output = (
        (traffic.output_tokens.p50, traffic.output_tokens.p95) if traffic.output_tokens else DEFAULT_OUTPUT
    )
    batch_fraction = {
        TrafficClass.INTERACTIVE: 0.0,
        TrafficClass.BATCH: 1.0,
        TrafficClass.MIXED: traffic.batch_fraction if traffic.batch_fraction is not None else 0.5,
    }[TrafficClass(traffic.traffic_class)]
    rps = traffic.expected_rps if traffic.expected_rps is not None else DEFAULT_RPS
    return Load(rps, lognormal_samples(*prompt), lognormal_samples(*output), batch_fraction)


def load_from_trace(
    path: str | Path,
    rps: float | None = None,
    peak_window_s: float | None = None,
    batch_fraction: float = 0.0,
) -> Load:
    """Load from a trace file (Azure LLM CSV or Mooncake JSONL, read by `policies.workloads.load_trace`).

    The rate is the trace's mean rate, or its busiest `peak_window_s` window, or `rps` when given; the
    token samples are the trace's own requests.
    """
    trace = load_trace(path)
    seconds, prompts, outputs = trace.arrival_s, trace.prompt_tokens, trace.output_tokens
    if rps is None:
        span = max(float(seconds[-1] - seconds[0]), 1e-9)
        rps = len(seconds) / span
        if peak_window_s:
            counts = np.searchsorted(seconds, seconds + peak_window_s) - np.arange(len(seconds))
            rps = float(counts.max()) / peak_window_s
    return Load(
        float(rps), np.maximum(np.array(prompts), 1), np.maximum(np.array(outputs), 1), batch_fraction
    )


# ---------------------------------------------------------------- sizing one configuration


def _windows(policy: SLOPolicySpec, tier: Tier) -> np.ndarray:
    window: WindowRange = getattr(policy.tier_batch_windows, tier.value)
    return np.unique([window.min_ms, window.max_ms]) / 1000.0


def settings_allowed(policy: SLOPolicySpec, tiers: Iterable[TierConfig]) -> bool:
    """Whether every tier's max batch and batch window are among those the planner may choose under `policy`
    (an edited policy can rule out the running ones)."""
    return all(
        t.max_batch in MAX_BATCHES
        and any(abs(t.batch_window_ms - w * 1000.0) < 1e-6 for w in _windows(policy, t.tier))
        for t in tiers
    )


def size_tier(
    model: StepModel,
    tokens: TokenStats,
    tier: Tier,
    tier_rps: float,
    targets: Targets,
    headroom: float,
    max_batches: Iterable[int],
    windows_s: Iterable[float],
    min_replicas: int,
) -> TierSizing:
    """Fewest replicas of one tier on one (accelerator, TP); its best max batch and window."""
    batches = np.array(sorted(max_batches))
    windows = np.array(sorted(windows_s), dtype=float)
    chunk = CHUNK_TOKENS[tier]
    predictor = ReplicaPredictor(model, tokens, chunk, int(batches.max()))
    capacity = _capacity(predictor, batches, windows, targets)
    if not (capacity > 0).any():
        reason = _why_none(predictor, batches, windows, targets)
        return TierSizing(
            TierConfig(tier, 0, int(batches[-1]), float(windows[0] * 1000)),
            0.0,
            math.inf,
            math.inf,
            1.0,
            reason,
        )
    usable = (1.0 - headroom) * capacity
    with np.errstate(divide="ignore"):
        need = np.where(usable > 0, np.ceil(tier_rps / np.maximum(usable, 1e-300) - 1e-9), np.inf)
    need = np.maximum(need, min_replicas)
    # Fewest replicas; among equals the most capacity (lowest latency at the planned rate), then the largest
    # max batch (room for bursts at no predicted cost).
    largest = np.broadcast_to(-batches[:, None], capacity.shape)
    order = np.lexsort((largest.ravel(), -np.round(capacity, 6).ravel(), need.ravel()))
    bi, wi = np.unravel_index(order[0], capacity.shape)
    replicas = int(need[bi, wi])
    per_replica = tier_rps / replicas if replicas else 0.0
    p = predictor.predict(np.array([[max(per_replica, 1e-9)]]), batches[[bi]], windows[[wi]])
    return TierSizing(
        TierConfig(tier, replicas, int(batches[bi]), float(windows[wi] * 1000)),
        float(capacity[bi, wi]),
        float(p.ttft[0, 0, 0]),
        float(p.tpot[0, 0]),
        float(p.utilisation[0, 0]),
        None,
    )


def _capacity(
    predictor: ReplicaPredictor, batches: np.ndarray, windows: np.ndarray, targets: Targets
) -> np.ndarray:
    """SLO capacity (rps) of one replica per (max batch, window): the highest rate up to which every grid
    rate meets the targets, on a coarse geometric grid refined linearly inside each batch's bracket."""
    coarse = predictor.rate_upper_bound(batches)[:, None] * COARSE  # (B, R)
    ok = _ok(predictor, coarse, batches, windows, targets)  # (B, W, R)
    last = _last_ok(ok)  # (B, W): last good rate before the first bad one, -1 if none
    lo = np.where(
        last >= 0, np.take_along_axis(coarse[:, None, :], np.maximum(last, 0)[..., None], -1)[..., 0], 0.0
    )
    top = np.minimum(last + 1, len(COARSE) - 1)
    hi = np.take_along_axis(np.broadcast_to(coarse[:, None, :], ok.shape), top[..., None], -1)[..., 0]
    # One fine grid per batch spanning every window's bracket.
    start, stop = lo.min(axis=1), hi.max(axis=1)
    fine = start[:, None] + (stop - start)[:, None] * (np.arange(1, FINE + 1) / (FINE + 1))
    fine_ok = _ok(predictor, np.maximum(fine, 1e-9), batches, windows, targets) & (
        fine[:, None, :] > lo[..., None]
    )
    fine_ok |= fine[:, None, :] <= lo[..., None]  # below a window's own bracket: already known good
    fine_last = _last_ok(fine_ok)
    refined = np.take_along_axis(
        np.broadcast_to(fine[:, None, :], fine_ok.shape), np.maximum(fine_last, 0)[..., None], -1
    )[..., 0]
    best = np.where(fine_last >= 0, np.maximum(refined, lo), lo)
    return np.where(last < 0, 0.0, np.where(last == len(COARSE) - 1, lo, best))


def _last_ok(ok: np.ndarray) -> np.ndarray:
    first_bad = np.where(ok.all(-1), ok.shape[-1], np.argmin(ok, axis=-1))
    return first_bad - 1


def _ok(
    predictor: ReplicaPredictor, rates: np.ndarray, batches: np.ndarray, windows: np.ndarray, targets: Targets
) -> np.ndarray:
    """Whether each (max batch, window, rate) meets every target and the slot limit; rates has shape (B, R)."""
    ok = np.ones((len(batches), len(windows), rates.shape[1]), dtype=bool)
    for q in targets.quantiles:
        p = predictor.predict(rates, batches, windows, q, q)
        for quantile, limit in targets.ttft:
            if quantile == q:
                ok &= p.ttft <= limit
        for quantile, limit in targets.tpot:
            if quantile == q:
                ok &= (p.tpot <= limit)[:, None, :]
        ok &= ((p.utilisation <= 1.0) & (p.slot_occupancy <= SLOT_LIMIT))[:, None, :]
    return ok


def _why_none(predictor: ReplicaPredictor, batches: np.ndarray, windows: np.ndarray, targets: Targets) -> str:
    """Which target fails even at a trickle of load, with the predicted value, for the rejection message."""
    tiny = np.full((len(batches), 1), 1e-4)
    for q in targets.quantiles:
        p = predictor.predict(tiny, batches, windows, q, q)
        for quantile, limit in targets.tpot:
            if quantile == q and np.min(p.tpot) > limit:
                return f"tpot: p{round(q * 100)} {exceeds(np.min(p.tpot) * 1000, limit * 1000)} even unloaded"
        for quantile, limit in targets.ttft:
            if quantile == q and np.min(p.ttft) > limit:
                return f"ttft: p{round(q * 100)} {exceeds(np.min(p.ttft) * 1000, limit * 1000)} even unloaded"
    return "ttft: no load level meets the targets"


# ---------------------------------------------------------------- search


def tier_shares(spec: InferenceServiceSpec, load: Load) -> list[tuple[Tier, float]]:
    cls = TrafficClass(spec.traffic.traffic_class)
    if cls == TrafficClass.INTERACTIVE:
        return [(Tier.INTERACTIVE, load.rps)]
    if cls == TrafficClass.BATCH:
        return [(Tier.BATCH, load.rps)]
    return [
        (Tier.INTERACTIVE, load.rps * (1 - load.batch_fraction)),
        (Tier.BATCH, load.rps * load.batch_fraction),
    ]


def tensor_parallel_options(
    spec: InferenceServiceSpec, pool: AcceleratorPool, profile: ModelProfile
) -> list[int]:
    acc = accelerator(pool.type)
    limit = min(spec.scaling.max_tensor_parallel, acc.max_tensor_parallel, pool.max_count)
    return [tp for tp in TENSOR_PARALLEL if tp <= limit and profile.heads % tp == 0]


def kv_tokens_needed(max_batch: int, tokens: TokenStats, load: Load) -> float:
    """KV a full batch holds: max batch × the mean decoding context, and at least the longest request."""
    longest = float(np.max(load.prompt_tokens) + np.max(load.output_tokens))
    return max(max_batch * tokens.decode_context, longest)


def feasible_batches(
    model: StepModel, tokens: TokenStats, load: Load, tier: Tier, options: Iterable[int] = MAX_BATCHES
) -> list[int]:
    """Max batches whose weights, activations and full batch of KV fit in the device's usable memory."""
    usable = model.accelerator.memory_bytes * model.accelerator.memory_utilisation
    return [
        b
        for b in options
        if model.memory_bytes(kv_tokens_needed(b, tokens, load), b, CHUNK_TOKENS[tier]) <= usable
    ]


def evaluate(
    spec: InferenceServiceSpec,
    load: Load,
    policy: SLOPolicySpec,
    pool: AcceleratorPool,
    tp: int,
    profile: ModelProfile,
    tokens: TokenStats,
    targets: Targets,
    ttft_factor: float = 1.0,
    tpot_factor: float = 1.0,
    fixed: tuple[TierConfig, ...] | None = None,
) -> Candidate:
    """One (accelerator, TP) point: its best tier configurations and, if ruled out, why. With `fixed`, each
    tier keeps that max batch and window and only its replicas are sized."""
    acc = accelerator(pool.type)
    model = StepModel(profile, acc, tp, ttft_factor, tpot_factor)
    price = price_of(pool) * tp
    tiers = tier_shares(spec, load)
    if fixed is not None and [t for t, _ in tiers] != [Tier(c.tier) for c in fixed]:
        raise ValueError(f"fixed tiers {[c.tier for c in fixed]} do not match the service's {tiers}")
    sizings: list[TierSizing] = []
    rejected: str | None = None
    for index, (tier, rps) in enumerate(tiers):
        options, windows = MAX_BATCHES, _windows(policy, tier)
        if fixed is not None:
            options, windows = (fixed[index].max_batch,), np.array([fixed[index].batch_window_ms / 1000.0])
        batches = feasible_batches(model, tokens, load, tier, options)
        if not batches:
            smallest = MAX_BATCHES[0]
            need = model.memory_bytes(kv_tokens_needed(smallest, tokens, load), smallest, CHUNK_TOKENS[tier])
            rejected = (
                f"memory: {need / 1e9:.1f} GB per device for weights and a batch of {smallest} > "
                f"{acc.memory_bytes * acc.memory_utilisation / 1e9:.1f} GB usable"
            )
            break
        floor = spec.scaling.min_replicas if index == 0 else 0
        sizing = size_tier(model, tokens, tier, rps, targets, policy.headroom, batches, windows, floor)
        sizings.append(sizing)
        if sizing.rejected:
            rejected = sizing.rejected
            break
    if rejected is not None:
        head = sizings[0].config if sizings else TierConfig(tiers[0][0], 0, MAX_BATCHES[0], 0.0)
        return Candidate(
            accelerator=acc.name,
            tensor_parallel=tp,
            replicas=0,
            max_batch=head.max_batch,
            batch_window_ms=head.batch_window_ms,
            chunk_tokens=CHUNK_TOKENS[head.tier],
            tier=spec.traffic.traffic_class,
            tiers=tuple(s.config for s in sizings),
            predicted_ttft_p95_ms=math.inf,
            predicted_tpot_p95_ms=math.inf,
            cost_per_hour=math.inf,
            utilisation=1.0,
            rejected=rejected,
        )
    replicas = sum(s.config.replicas for s in sizings)
    cost = replicas * price
    head = sizings[0]
    candidate = Candidate(
        accelerator=acc.name,
        tensor_parallel=tp,
        replicas=replicas,
        max_batch=head.config.max_batch,
        batch_window_ms=head.config.batch_window_ms,
        chunk_tokens=CHUNK_TOKENS[head.config.tier],
        tier=spec.traffic.traffic_class,
        tiers=tuple(s.config for s in sizings),
        predicted_ttft_p95_ms=max(s.ttft_p95_s for s in sizings) * 1000,
        predicted_tpot_p95_ms=max(s.tpot_p95_s for s in sizings) * 1000,
        cost_per_hour=cost,
        utilisation=max(s.utilisation for s in sizings),
    )
    return _with_limits(candidate, spec, pool)


def _with_limits(candidate: Candidate, spec: InferenceServiceSpec, pool: AcceleratorPool) -> Candidate:
    devices = candidate.replicas * candidate.tensor_parallel
    if devices > pool.max_count:
        return replace(
            candidate, rejected=f"max_count: {devices} {pool.type} needed > pool maxCount {pool.max_count}"
        )
    if candidate.replicas > spec.scaling.max_replicas:
        return replace(
            candidate,
            rejected=f"max_replicas: {candidate.replicas} replicas needed > maxReplicas {spec.scaling.max_replicas}",
        )
    budget = spec.scaling.max_cost_per_hour
    if budget is not None and candidate.cost_per_hour > budget:
        return replace(
            candidate, rejected=f"budget: ${candidate.cost_per_hour:.2f}/h > maxCostPerHour ${budget:.2f}/h"
        )
    return candidate


def _rank(candidate: Candidate, replica_price: float) -> tuple[float, ...]:
    """Feasible first, cheapest first; then fewer devices, the cheaper next replica (what scaling up or
    waking from zero costs), lower TP, lower predicted latency."""
    return (
        0 if candidate.feasible else 1,
        candidate.cost_per_hour,
        candidate.replicas * candidate.tensor_parallel,
        replica_price,
        candidate.tensor_parallel,
        candidate.predicted_ttft_p95_ms,
    )


def plan(
    spec: InferenceServiceSpec,
    load: Load,
    policy: SLOPolicySpec,
    ttft_factor: float = 1.0,
    tpot_factor: float = 1.0,
) -> PlanResult:
    """The cheapest plan predicted to meet the SLO at `load` with the policy's headroom, and the ranked rest.

    `ttft_factor` and `tpot_factor` are the online calibration (observed / predicted) of each phase.
    """
    profile = profile_for(spec.model)
    tokens = token_stats(load)
    targets = Targets.of(spec.slo)
    candidates = [
        evaluate(spec, load, policy, pool, tp, profile, tokens, targets, ttft_factor, tpot_factor)
        for pool in spec.accelerators
        for tp in tensor_parallel_options(spec, pool, profile)
    ]
    prices = {pool.type: price_of(pool) for pool in spec.accelerators}
    ranked = tuple(sorted(candidates, key=lambda c: _rank(c, prices[c.accelerator] * c.tensor_parallel)))
    chosen = ranked[0] if ranked and ranked[0].feasible else None
    binding = None
    if chosen is None:
        binding = (
            ranked[0].rejected
            if ranked
            else f"memory: no tensor-parallel degree divides {profile.heads} heads"
        )
    return PlanResult(
        chosen=chosen,
        alternatives=tuple(c for c in ranked if c is not chosen),
        binding_constraint=binding,
        kv_bytes_per_token=profile.kv_bytes_per_token,
    )


def required_replicas(
    spec: InferenceServiceSpec,
    load: Load,
    policy: SLOPolicySpec,
    accelerator_type: str,
    tensor_parallel: int,
    ttft_factor: float = 1.0,
    tpot_factor: float = 1.0,
    fixed: tuple[TierConfig, ...] | None = None,
) -> Candidate:
    """Re-size a fixed accelerator and TP for a new load: the cheap path for each autoscaling interval.

    With `fixed` tiers, their max batch and windows are kept too and only their replicas change.
    """
    pool = next(p for p in spec.accelerators if p.type == accelerator_type)
    profile = profile_for(spec.model)
    return evaluate(
        spec,
        load,
        policy,
        pool,
        tensor_parallel,
        profile,
        token_stats(load),
        Targets.of(spec.slo),
        ttft_factor,
        tpot_factor,
        fixed=fixed,
    )


def replicas_for(
    spec: InferenceServiceSpec,
    candidate: Candidate,
    load: Load,
    policy: SLOPolicySpec,
    ttft_factor: float = 1.0,
    tpot_factor: float = 1.0,
) -> Candidate:
    """Re-size a running plan for a new load, keeping its accelerator, TP, max batch and windows: only the
    replicas of each tier change, so the autoscaler can scale without a rollout."""
    return required_replicas(
        spec,
        load,
        policy,
        candidate.accelerator,
        candidate.tensor_parallel,
        ttft_factor,
        tpot_factor,
        fixed=candidate.tiers,
    )
