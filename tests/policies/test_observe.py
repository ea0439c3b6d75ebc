"""histogram_quantile follows Prometheus; build_observation turns window series into an Observation."""

import math
from dataclasses import replace

import numpy as np
import pytest

from goodput.policies.observe import (
    ITL_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    TierWindow,
    build_observation,
    histogram_quantile,
    histogram_quantiles,
    over_time,
    token_buckets,
)

INF = math.inf


@pytest.mark.parametrize(
    ("q", "bounds", "counts", "expected"),
    [
        # rank 0.5*100 = 50 lands in (0.1, 0.5]: 0.1 + 0.4 * (50 - 40) / (80 - 40)
        (0.5, [0.1, 0.5, 1.0, INF], [40, 80, 100, 100], 0.2),
        # the first bucket interpolates from 0
        (0.2, [0.1, 0.5, 1.0, INF], [40, 80, 100, 100], 0.05),
        # rank in the +Inf bucket: the largest finite bound
        (0.99, [0.1, 0.5, INF], [10, 20, 100], 0.5),
        # a first bucket with bound <= 0 returns that bound
        (0.1, [0.0, 1.0, INF], [5, 10, 10], 0.0),
        # exactly on a bucket edge: the bucket's upper bound
        (0.4, [0.1, 0.5, 1.0, INF], [40, 80, 100, 100], 0.1),
    ],
)
def test_histogram_quantile_matches_prometheus(q, bounds, counts, expected):
    assert histogram_quantile(q, np.array(bounds), np.array(counts)) == pytest.approx(expected)


def test_histogram_quantile_edge_cases():
    b, c = np.array([0.1, INF]), np.array([1.0, 2.0])
    assert math.isnan(histogram_quantile(0.5, b, np.array([0.0, 0.0])))  # no observations
    assert math.isnan(histogram_quantile(0.5, np.array([0.1, 0.2]), c))  # no +Inf bucket
    assert math.isnan(histogram_quantile(math.nan, b, c))
    assert histogram_quantile(-0.1, b, c) == -INF
    assert histogram_quantile(1.1, b, c) == INF
    # non-monotonic counts are repaired, not trusted: [5, 3, 10] is read as [5, 5, 10]
    assert histogram_quantile(0.5, np.array([1.0, 2.0, INF]), np.array([5.0, 3.0, 10.0])) == pytest.approx(
        1.0
    )


def test_vllm_buckets_and_finer_itl():
    assert TTFT_BUCKETS[:3] == (0.001, 0.005, 0.01) and TTFT_BUCKETS[-1] == 2560.0
    assert sum(b < 0.01 for b in ITL_BUCKETS) >= 3  # finer than vLLM's first bucket at 10 ms
    assert list(ITL_BUCKETS) == sorted(ITL_BUCKETS)
    assert token_buckets(100) == (1, 2, 5, 10, 20, 50, 100)


def test_histogram_from_samples_uses_le_semantics():
    h = Histogram.from_samples((0.1, 0.5), np.array([0.1, 0.2, 0.5, 0.7]))
    assert list(h.cumulative) == [1, 3, 4]
    weighted = Histogram.from_samples((0.1, 0.5), np.array([0.05, 0.3]), weights=np.array([3.0, 1.0]))
    assert list(weighted.cumulative) == [3, 4, 4]
    assert Histogram.from_le({"0.1": 1, "+Inf": 4, "0.5": 3}).cumulative.tolist() == [1, 3, 4]


def test_quantile_recovers_sample_percentile_within_bucket():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.25, 0.5, 10_000)  # inside one TTFT bucket: interpolation is exact for uniform
    h = Histogram.from_samples(TTFT_BUCKETS, values)
    assert h.quantile(0.95) == pytest.approx(np.percentile(values, 95), rel=0.01)


def test_build_observation_sums_tiers_and_keeps_per_tier():
    ttft_i = Histogram.from_samples(TTFT_BUCKETS, np.full(90, 0.3))
    ttft_b = Histogram.from_samples(TTFT_BUCKETS, np.full(10, 3.0))
    obs = build_observation(
        1000.0,
        30.0,
        {
            "interactive": TierWindow(ttft=ttft_i, requests=90, running=4, waiting=1, kv_cache_usage=0.2),
            "batch": TierWindow(ttft=ttft_b, requests=10, running=6, waiting=3, kv_cache_usage=0.6),
        },
    )
    assert obs is not None
    assert obs.rps == pytest.approx(100 / 30)
    assert obs.queue_depth == 4 and obs.running == 10
    assert obs.kv_cache_usage == pytest.approx(0.4)
    # p95 of the merged histogram falls in the batch tier's (2.5, 5] bucket
    assert 2500 < obs.ttft_p95_ms <= 5000
    assert obs.per_tier["interactive"].ttft_p95_ms < 500
    assert obs.per_tier["batch"].rps == pytest.approx(10 / 30)


def test_windows_over_time_sum_increases_and_keep_the_last_gauges():
    fast = Histogram.from_samples(TTFT_BUCKETS, np.full(40, 0.3))
    slow = Histogram.from_samples(TTFT_BUCKETS, np.full(10, 3.0))
    older = TierWindow(ttft=fast, requests=40, running=9, waiting=5, kv_cache_usage=0.9, ready_replicas=2)
    newer = TierWindow(ttft=slow, requests=10, running=1, waiting=None, kv_cache_usage=0.1, ready_replicas=3)
    both = over_time([older, newer])
    assert both.ttft is not None and both.ttft.count == 50 and both.requests == 50
    assert both.prefix_cache_hits is None  # in neither window
    assert (both.running, both.waiting, both.kv_cache_usage, both.ready_replicas) == (1, None, 0.1, 3)
    assert over_time([older]) == older


def test_zero_traffic_is_an_observation_and_no_series_is_missing():
    zero = Histogram.from_samples(TTFT_BUCKETS, np.array([]))
    obs = build_observation(
        0.0, 60.0, {"interactive": TierWindow(ttft=zero, requests=0.0, running=0, waiting=0)}
    )
    assert obs is not None and obs.rps == 0 and obs.ttft_p95_ms is None
    assert build_observation(0.0, 60.0, {}) is None
    assert build_observation(0.0, 60.0, {"interactive": TierWindow()}) is None


def test_requests_fall_back_on_ttft_count():
    ttft = Histogram.from_samples(TTFT_BUCKETS, np.full(30, 0.1))
    obs = build_observation(0.0, 15.0, {"interactive": TierWindow(ttft=ttft)})
    assert obs.requests == 30 and obs.rps == 2.0


def test_histogram_quantiles_answers_many_quantiles_in_one_pass():
    bounds, counts = np.array([0.0, 0.1, 0.5, 1.0, INF]), np.array([2.0, 40.0, 30.0, 100.0, 120.0])
    qs = np.array([0.01, 0.2, 0.5, 0.99, -0.5, 1.5, math.nan])
    many = histogram_quantiles(qs, bounds, counts)  # counts repaired to 2, 40, 40, 100, 120
    expected = [
        0.0,  # rank 1.2 in a first bucket with bound <= 0: that bound
        0.1 * (24 - 2) / (40 - 2),  # rank 24 in (0, 0.1]
        0.5 + 0.5 * (60 - 40) / (100 - 40),  # rank 60 in (0.5, 1]: the empty (0.1, 0.5] is skipped
        1.0,  # rank 118.8 in +Inf: the largest finite bound
        -INF,
        INF,
    ]
    np.testing.assert_allclose(many[:6], expected)
    assert math.isnan(many[6])
    assert np.isnan(histogram_quantiles(qs[:4], bounds, np.zeros(5))).all()  # no observations


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.5, 80.0),  # on a bucket bound: that bucket's cumulative count
        (0.3, 60.0),  # inside (0.1, 0.5]: 40 + (80 - 40) * 0.2 / 0.4, as histogram_quantile interpolates
        (0.05, 20.0),  # the first bucket interpolates from 0
        (7.0, 100.0),  # past the largest finite bound: the count there (the +Inf bucket tells nothing more)
    ],
)
def test_count_within_inverts_histogram_quantile(x, expected):
    h = Histogram(np.array([0.1, 0.5, 1.0, INF]), np.array([40.0, 80.0, 100.0, 130.0]))
    assert h.count_within(x) == pytest.approx(expected)
    if x <= 1.0:
        assert histogram_quantile(expected / 130.0, h.upper_bounds, h.cumulative) == pytest.approx(x)


def test_a_ttft_target_counts_the_first_tokens_that_met_it_over_all_tiers():
    fast = Histogram.from_samples(TTFT_BUCKETS, np.full(90, 0.3))
    slow = Histogram.from_samples(TTFT_BUCKETS, np.full(10, 3.0))
    tiers = {"interactive": TierWindow(ttft=fast, requests=90), "batch": TierWindow(ttft=slow, requests=10)}
    obs = build_observation(0.0, 15.0, tiers, ttft_target_s=1.0)
    assert obs.ttft_met == (90.0, 100.0)
    assert obs.per_tier["batch"].ttft_met == (0.0, 10.0)
    assert build_observation(0.0, 15.0, tiers).ttft_met is None  # no target, no count


WORKERS_TTFT = Histogram.from_samples(TTFT_BUCKETS, np.full(100, 0.3))
QUEUED_TTFT = Histogram.from_samples(TTFT_BUCKETS, np.r_[np.full(90, 0.3), np.full(10, 2.3)])


@pytest.mark.parametrize(
    ("router", "client", "client_met"),
    [
        (
            QUEUED_TTFT,
            QUEUED_TTFT,
            (90.0, 100.0),
        ),  # the router's queue adds 2 s to a tenth of the first tokens
        (None, WORKERS_TTFT, (100.0, 100.0)),  # no router: the workers' TTFT
        (Histogram.from_samples(TTFT_BUCKETS, np.array([])), WORKERS_TTFT, (100.0, 100.0)),  # none timed
    ],
)
def test_the_ttft_clients_see_is_the_router_s_where_it_timed_any(router, client, client_met):
    tiers = {"interactive": TierWindow(ttft=WORKERS_TTFT, requests=100, router_ttft=router)}
    obs = build_observation(0.0, 15.0, tiers, ttft_target_s=1.0)
    assert obs.ttft_p95_ms == WORKERS_TTFT.quantile(0.95) * 1000  # the workers' own figure stays as it was
    assert obs.ttft_met == (100.0, 100.0)
    assert obs.client_ttft_p95_ms == client.quantile(0.95) * 1000
    assert obs.client_ttft_met == client_met
    assert QUEUED_TTFT.quantile(0.95) > 1.0 > WORKERS_TTFT.quantile(0.95)


def test_the_router_s_ttft_sums_over_tiers_and_alone_makes_a_window():
    slow = Histogram.from_samples(TTFT_BUCKETS, np.full(10, 3.0))
    fast = Histogram.from_samples(TTFT_BUCKETS, np.full(90, 0.3))
    tiers = {"interactive": TierWindow(router_ttft=fast), "batch": TierWindow(router_ttft=slow)}
    obs = build_observation(0.0, 15.0, tiers, ttft_target_s=1.0)
    assert obs is not None
    assert obs.router_ttft_met == (90.0, 100.0)
    assert obs.per_tier["batch"].client_ttft_met == (0.0, 10.0)


def test_requests_held_past_the_target_count_as_misses_of_the_window_they_pass_it_in():
    """Behind a shortest-first queue a long prompt can starve while every first token served is fast: the held
    requests that passed the target during the window join the clients' TTFT quantile then (those that passed it
    in an earlier window counted there), and the error budget still counts each request once, at its first token.
    """
    served = Histogram.from_samples(TTFT_BUCKETS, np.full(90, 0.3))
    held = Histogram.from_samples(TTFT_BUCKETS, np.r_[np.full(5, 0.2), np.full(10, 7.0), np.full(50, 40.0)])
    tiers = {"interactive": TierWindow(ttft=served, requests=90, router_ttft=served, router_queue_age=held)}
    obs = build_observation(0.0, 15.0, tiers, ttft_target_s=1.0)
    assert (
        obs.client_ttft_p95_ms > 1000.0 > served.quantile(0.95) * 1000
    )  # 10 of 100 passed it in this window
    assert obs.client_ttft_met == (90.0, 90.0)
    assert obs.ttft_p95_ms == served.quantile(0.95) * 1000  # the workers' own figure stays as it was
    longer = build_observation(
        0.0, 60.0, tiers, ttft_target_s=1.0
    )  # a 60 s window: the 50 at 40 s passed in it
    assert longer.client_ttft_p95_ms > obs.client_ttft_p95_ms
    for ages in (np.full(5, 0.2), np.full(5, 40.0)):  # not past the target yet; past it before this window
        calm = replace(tiers["interactive"], router_queue_age=Histogram.from_samples(TTFT_BUCKETS, ages))
        assert build_observation(0.0, 15.0, {"interactive": calm}, 0.95, 1.0).client_ttft_p95_ms == (
            served.quantile(0.95) * 1000
        )
    alone = {"interactive": TierWindow(router_queued=65.0, router_queue_age=held)}  # nothing served at all
    assert build_observation(0.0, 15.0, alone, ttft_target_s=1.0).client_ttft_p95_ms > 1000.0


def test_between_keeps_what_lies_in_a_range():
    h = Histogram.from_samples(TTFT_BUCKETS, np.r_[np.full(5, 0.2), np.full(10, 7.0), np.full(3, 40.0)])
    assert h.between(1.0, 16.0).count == 10
    assert h.between(1.0, 16.0).count_within(1.0) == 0
    assert h.between(0.0, math.inf).count == h.count


def test_a_queue_age_in_other_buckets_still_joins_the_router_s_ttft():
    """A router of another version may bucket differently: the held requests are re-binned, not refused."""
    served = Histogram.from_samples(TTFT_BUCKETS, np.full(90, 0.3))
    coarse = Histogram.from_samples((0.5, 5.0, 30.0), np.full(10, 4.0))
    window = TierWindow(ttft=served, requests=90, router_ttft=served, router_queue_age=coarse)
    obs = build_observation(0.0, 15.0, {"interactive": window}, ttft_target_s=1.0)
    assert obs.client_ttft_p95_ms > 1000.0
    assert coarse.rebinned(served.upper_bounds).count == coarse.count
