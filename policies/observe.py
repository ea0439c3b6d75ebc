"""From bucketed histograms to an Observation: the one code path the operator and the simulator share.

The operator feeds it `sum by (namespace, inferenceservice, tier, le)(increase(<histogram>_bucket[W]))`
results read from Prometheus; the simulator feeds it histograms it fills with the same bucket boundaries.
Quantiles use Prometheus's `histogram_quantile` interpolation, so both see the same p95 for the same counts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache, reduce
from typing import ClassVar

import numpy as np

from goodput.policies.types import Observation
from goodput.worker_image.contract import INTER_TOKEN_BUCKETS, TOKEN_COUNT_BUCKETS, token_count_buckets
from goodput.worker_image.contract import TTFT_BUCKETS as TTFT_BUCKETS

# The worker's buckets (worker_image.contract) under the names this package's callers use.
ITL_BUCKETS = INTER_TOKEN_BUCKETS
TOKEN_BUCKETS = TOKEN_COUNT_BUCKETS
token_buckets = token_count_buckets

# the PromQL range the operator reads each series' increase over, by default (GOODPUT_OPERATOR_WINDOW_S): the
# control interval, so each decision sees what happened since the last one. The autoscaler's rules were measured
# at it; a longer range averages a burst with the calm around it (docs/architecture.md, "The loop"). A range
# longer than the interval makes consecutive windows overlap, as the simulator's then do (`over_time`).
DEFAULT_WINDOW_S = 15

# quantiles of the token-count histograms an Observation carries: the top one is the 99.2nd percentile. With
# 16 it was the 96.9th: the long prompts behind a window's TTFT p95 (and those the others queue behind) were
# cut off, and the TTFT calibration read the model's resulting optimism as prefill 1.5-2x slower than it is
TOKEN_NODES = 64


def histogram_quantiles(
    qs: np.ndarray, upper_bounds: np.ndarray, cumulative_counts: np.ndarray
) -> np.ndarray:
    """Prometheus's `histogram_quantile` for many quantiles of one histogram in one numpy pass.

    Linear interpolation inside the bucket holding rank q·count. `upper_bounds` must end with +Inf (else NaN,
    as Prometheus). NaN when there are no observations; a rank in the +Inf bucket returns the largest finite
    bound. Non-monotonic counts (from scrape races) are made monotonic first, as Prometheus does.
    """
    q = np.asarray(qs, dtype=float)
    bounds = np.asarray(upper_bounds, dtype=float)
    counts = np.maximum.accumulate(np.asarray(cumulative_counts, dtype=float))
    out = np.full(q.shape, math.nan)
    out[q < 0] = -math.inf
    out[q > 1] = math.inf
    inside = (q >= 0) & (q <= 1)
    if len(bounds) < 2 or not math.isinf(bounds[-1]) or bounds[-1] < 0 or counts[-1] == 0:
        out[inside] = math.nan
        return out
    rank = q[inside] * counts[-1]
    b = np.searchsorted(counts[:-1], rank, side="left")  # first bucket with count >= rank
    last = b == len(bounds) - 1
    b_in = np.minimum(b, len(bounds) - 2)
    previous = np.maximum(b_in - 1, 0)
    first = b_in == 0
    start = np.where(first, 0.0, bounds[previous])
    below = np.where(first, 0.0, counts[previous])
    width = counts[b_in] - below  # 0 only for rank 0 in an empty first bucket: 0/0, NaN as Prometheus
    ratio = np.divide(rank - below, width, out=np.full(rank.shape, math.nan), where=width > 0)
    value = start + (bounds[b_in] - start) * ratio
    value = np.where(first & (bounds[0] <= 0), bounds[0], value)
    out[inside] = np.where(last, bounds[-2], value)
    return out


def histogram_quantile(q: float, upper_bounds: np.ndarray, cumulative_counts: np.ndarray) -> float:
    """One quantile; see `histogram_quantiles`."""
    return float(histogram_quantiles(np.array([q]), upper_bounds, cumulative_counts)[0])


@lru_cache(maxsize=256)
def _le_order(les: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted bounds and the order that sorts them, per `le` label set: a fleet shares a few, so parse once."""
    bounds = np.array([float(le) for le in les])
    order = np.argsort(bounds, kind="stable")
    bounds = bounds[order]
    bounds.flags.writeable = False
    return bounds, order


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (Prometheus `le` semantics) over finite upper bounds plus +Inf."""

    upper_bounds: np.ndarray  # ends with +Inf
    cumulative: np.ndarray

    @classmethod
    def from_samples(
        cls, bounds: tuple[float, ...], values: np.ndarray, weights: np.ndarray | None = None
    ) -> Histogram:
        """Fill a histogram the way a Prometheus client does: a value v lands in the first bucket with v <= le."""
        edges = np.append(np.asarray(bounds, dtype=float), math.inf)
        idx = np.searchsorted(edges, np.asarray(values, dtype=float), side="left")
        per_bucket = np.bincount(idx, weights=weights, minlength=len(edges))[: len(edges)]
        return cls(edges, np.cumsum(per_bucket).astype(float))

    @classmethod
    def from_le(cls, by_le: Mapping[str, float]) -> Histogram:
        """From a PromQL result keyed by the `le` label ("0.5", "+Inf", ...)."""
        bounds, order = _le_order(tuple(by_le))
        return cls(bounds, np.fromiter(by_le.values(), dtype=float, count=len(by_le))[order])

    @property
    def count(self) -> float:
        return float(self.cumulative[-1]) if len(self.cumulative) else 0.0

    def quantile(self, q: float) -> float | None:
        value = histogram_quantile(q, self.upper_bounds, self.cumulative)
        return None if math.isnan(value) else value

    def quantiles(self, qs: np.ndarray) -> list[float | None]:
        """Many quantiles at once (one numpy pass); None where `quantile` would give None."""
        values = histogram_quantiles(qs, self.upper_bounds, self.cumulative)
        return [None if math.isnan(v) else v for v in values.tolist()]

    def count_within(self, x: float) -> float:
        """Observations at or below `x`, interpolated inside its bucket as `histogram_quantile` would.

        Beyond the largest finite bound nothing is known, so the count there is the one at that bound.
        """
        if len(self.upper_bounds) < 2:
            return 0.0
        finite = self.upper_bounds[:-1]
        counts = np.maximum.accumulate(self.cumulative)
        return float(np.interp(x, np.r_[0.0, finite], np.r_[0.0, counts[:-1]]))

    def between(self, low: float, high: float) -> Histogram:
        """The observations in (low, high], interpolated inside buckets as `count_within` does."""
        kept = np.minimum(np.maximum.accumulate(self.cumulative), self.count_within(high))
        return Histogram(self.upper_bounds, np.maximum(kept - self.count_within(low), 0.0))

    def rebinned(self, upper_bounds: np.ndarray) -> Histogram:
        """The same observations in other buckets (ending with +Inf), interpolated as `count_within` does."""
        finite = [self.count_within(float(b)) for b in upper_bounds[:-1]]
        return Histogram(upper_bounds, np.minimum(np.array([*finite, self.count]), self.count))

    def __add__(self, other: Histogram) -> Histogram:
        if not np.array_equal(self.upper_bounds, other.upper_bounds):
            raise ValueError("cannot add histograms with different bucket boundaries")
        return Histogram(self.upper_bounds, self.cumulative + other.cumulative)


@dataclass(frozen=True)
class TierWindow:
    """One tier's raw window: bucket increases, counter increases and gauge sums, None where no series."""

    ttft: Histogram | None = None  # vllm:time_to_first_token_seconds
    itl: Histogram | None = None  # vllm:inter_token_latency_seconds
    prompt_tokens: Histogram | None = None  # vllm:request_prompt_tokens
    output_tokens: Histogram | None = None  # vllm:request_generation_tokens
    requests: float | None = None  # increase of vllm:request_success_total
    running: float | None = None  # sum over pods of vllm:num_requests_running
    waiting: float | None = None  # sum over pods of vllm:num_requests_waiting
    kv_cache_usage: float | None = None  # mean over pods of vllm:kv_cache_usage_perc
    ready_replicas: int | None = None
    # increases of vllm:prefix_cache_queries (prompt tokens looked up) and vllm:prefix_cache_hits (those cached)
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    router_queued: float | None = None  # sum over router pods of goodput:router_queue_depth
    router_in_flight: float | None = None  # sum over router pods of goodput:router_in_flight
    router_wait: Histogram | None = None  # goodput:router_queue_wait_seconds
    router_ttft: Histogram | None = None  # goodput:router_time_to_first_token_seconds: the TTFT clients see
    # goodput:router_queue_age_seconds at the window's end: how long each request the router holds has waited so
    # far (a gauge histogram, not an increase)
    router_queue_age: Histogram | None = None

    # the fields that are increases over the window; the others are gauges, read at its end
    INCREASES: ClassVar[frozenset[str]] = frozenset(
        {
            "ttft", "itl", "prompt_tokens", "output_tokens", "requests", "prefix_cache_queries",
            "prefix_cache_hits", "router_wait", "router_ttft",
        }
    )  # fmt: skip

    @property
    def empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.ttft,
                self.itl,
                self.requests,
                self.running,
                self.waiting,
                self.kv_cache_usage,
                self.router_queued,
                self.router_in_flight,
                self.router_wait,
                self.router_ttft,
            )
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _over_tiers(parts: list[TierWindow]) -> TierWindow:
    """The service's window: every histogram, counter and gauge summed over its tiers, KV usage averaged. Read
    off the fields, so a series added to TierWindow is summed without being listed here."""
    combined: dict[str, object] = {}
    for f in fields(TierWindow):
        present = [v for w in parts if (v := getattr(w, f.name)) is not None]
        if not present:
            combined[f.name] = None
        elif f.name == "kv_cache_usage":
            combined[f.name] = float(np.mean(present))
        else:
            combined[f.name] = reduce(operator.add, present)
    return TierWindow(**combined)  # type: ignore[arg-type]


def over_time(windows: Sequence[TierWindow]) -> TierWindow:
    """Consecutive windows as one longer window: increases summed, gauges as the last one read them (what a
    PromQL range as long as all of them gives)."""
    last = windows[-1]
    summed: dict[str, object] = {}
    for name in TierWindow.INCREASES:
        present = [v for w in windows if (v := getattr(w, name)) is not None]
        summed[name] = reduce(operator.add, present) if present else None
    return replace(last, **summed)


_NODE_QS = (np.arange(TOKEN_NODES) + 0.5) / TOKEN_NODES
_TOKEN_QS = np.concatenate(([0.5, 0.95], _NODE_QS))  # p50, p95, then the nodes: one pass per histogram


def _token_stats(h: Histogram | None) -> tuple[float | None, float | None, tuple[float, ...] | None]:
    """p50, p95 and the quantile nodes of a token-count histogram (nodes None when it holds nothing)."""
    if h is None:
        return None, None, None
    values = h.quantiles(_TOKEN_QS)
    nodes = None if h.count == 0 else tuple(round(float(v or 0.0), 1) for v in values[2:])
    return values[0], values[1], nodes


def _met(ttft: Histogram | None, target_s: float | None) -> tuple[float, float] | None:
    """First tokens within the TTFT target, and all first tokens (None without a target or a histogram)."""
    if target_s is None or ttft is None:
        return None
    return ttft.count_within(target_s), ttft.count


def _with_overdue(
    router_ttft: Histogram | None, queue_age: Histogram | None, target_s: float | None, window_s: float
) -> Histogram | None:
    """The router's TTFT with the requests it holds that passed the target during this window counted as this
    window's misses: behind a shortest-first queue the longest prompts starve, and the TTFT histogram, which
    counts a request only once it is served, would show a fleet meeting its SLO while they wait. Each counts in
    the window it passes the target and again at its first byte; the error budget (`router_ttft_met`) counts it
    once, at its first byte. Requests a replica has taken are left to the TTFT histogram: past the target there,
    they wait for their own prefill, which more replicas do not shorten."""
    if queue_age is None or target_s is None:
        return router_ttft
    overdue = queue_age.between(target_s, target_s + window_s)
    if overdue.count <= 0:
        return router_ttft
    if router_ttft is None:
        return overdue
    # a router of another version may bucket its queue ages differently from its TTFT
    return router_ttft + overdue.rebinned(router_ttft.upper_bounds)


def _observe_one(
    time: float, window_s: float, w: TierWindow, quantile: float, ttft_target_s: float | None
) -> Observation:
    requests = w.requests
    if requests is None:  # fall back on the TTFT histogram's count: one observation per request
        requests = w.ttft.count if w.ttft is not None else None
    count = requests if requests is not None else 0.0
    ttft_p95 = None if w.ttft is None else w.ttft.quantile(quantile)
    tpot_p95, tpot_p50 = (None, None) if w.itl is None else w.itl.quantiles(np.array([quantile, 0.5]))
    ttft_met = _met(w.ttft, ttft_target_s)
    router_ttft = w.router_ttft if w.router_ttft is not None and w.router_ttft.count > 0 else None
    router_ttft_met = _met(router_ttft, ttft_target_s)
    clients_ttft = _with_overdue(router_ttft, w.router_queue_age, ttft_target_s, window_s)
    hit_fraction = None
    if w.prefix_cache_queries and w.prefix_cache_hits is not None:
        hit_fraction = min(max(w.prefix_cache_hits / w.prefix_cache_queries, 0.0), 1.0)
    prompt_p50, prompt_p95, prompt_nodes = _token_stats(w.prompt_tokens)
    output_p50, output_p95, output_nodes = _token_stats(w.output_tokens)
    return Observation(
        time=time,
        window_s=window_s,
        rps=count / window_s,
        requests=count,
        ttft_p95_ms=_ms(ttft_p95),
        tpot_p95_ms=_ms(tpot_p95),
        kv_cache_usage=w.kv_cache_usage,
        queue_depth=w.waiting,
        running=w.running,
        prompt_tokens_p50=prompt_p50,
        prompt_tokens_p95=prompt_p95,
        output_tokens_p50=output_p50,
        output_tokens_p95=output_p95,
        ready_replicas=w.ready_replicas,
        tpot_p50_ms=_ms(tpot_p50),
        prompt_tokens_nodes=prompt_nodes,
        output_tokens_nodes=output_nodes,
        ttft_met=ttft_met,
        prefix_cache_hit_fraction=hit_fraction,
        router_queued=w.router_queued,
        router_in_flight=w.router_in_flight,
        router_wait_p95_ms=None if w.router_wait is None else _ms(w.router_wait.quantile(quantile)),
        router_ttft_p95_ms=None if clients_ttft is None else _ms(clients_ttft.quantile(quantile)),
        router_ttft_met=router_ttft_met,
    )


def build_observation(
    time: float,
    window_s: float,
    tiers: Mapping[str, TierWindow],
    quantile: float = 0.95,
    ttft_target_s: float | None = None,
) -> Observation | None:
    """One Observation from a window's per-tier series; None when Prometheus returned no series at all.

    A window with series but zero increase is zero traffic (rps 0, latency quantiles None), not missing data.
    The service-level view sums histograms and counters over tiers, and averages KV usage over tiers. With a
    TTFT target, it also counts the first tokens that met it (`ttft_met`), for the SLO's error budget.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    present = {name: w for name, w in tiers.items() if not w.empty}
    if not present:
        return None
    per_tier = {name: _observe_one(time, window_s, w, quantile, ttft_target_s) for name, w in present.items()}
    if len(per_tier) == 1:  # one tier: its sums over tiers are its own values, so is the service's view
        (only,) = per_tier.values()
        return replace(only, per_tier=per_tier)
    total = _over_tiers(list(present.values()))
    return replace(_observe_one(time, window_s, total, quantile, ttft_target_s), per_tier=per_tier)
