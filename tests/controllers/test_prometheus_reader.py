"""The reader's fixed query set and the parsing of Prometheus answers into per-tier windows."""

from __future__ import annotations

import gc
import math
from typing import Any

import numpy as np
import pytest

from goodput.controllers.prometheus import PrometheusError, PrometheusReader, gc_paused, parse, queries
from goodput.policies.observe import TTFT_BUCKETS, Histogram, build_observation


def test_a_fixed_small_query_set_grouped_for_all_services() -> None:
    promql = queries(60)
    assert len(promql) <= 5
    for text in promql.values():
        assert "namespace, inferenceservice, tier" in text
        assert "inferenceservice=" not in text  # never one query per service
    assert "[60s]" in promql["latency"]


def _row(series: str | None, value: float, **labels: str) -> dict[str, Any]:
    metric = {"namespace": "ns", "inferenceservice": "chat", "tier": "interactive", **labels}
    if series is not None:
        metric["series"] = series
    return {"metric": metric, "value": [1000.0, repr(value)]}


def _histogram(series: str, cumulative: list[tuple[str, float]], **labels: str) -> list[dict[str, Any]]:
    return [_row(series, count, le=le, **labels) for le, count in cumulative]


def _cumulative(seconds: np.ndarray) -> list[tuple[str, float]]:
    """A histogram in the TTFT buckets, as the rows of a query give it."""
    h = Histogram.from_samples(TTFT_BUCKETS, seconds)
    return [
        ("+Inf" if math.isinf(b) else repr(float(b)), float(c))
        for b, c in zip(h.upper_bounds, h.cumulative, strict=True)
    ]


def test_rows_become_observations() -> None:
    ttft = [("0.1", 50.0), ("0.25", 90.0), ("0.5", 100.0), ("+Inf", 100.0)]
    itl = [("0.005", 800.0), ("0.01", 1000.0), ("+Inf", 1000.0)]
    results = {
        "latency": _histogram("ttft", ttft) + _histogram("itl", itl),
        "tokens": [],
        "requests": [_row(None, 100.0)],
        "gauges": [
            _row("running", 6.0),
            _row("waiting", 2.0),
            _row("kv_cache_usage", 0.4),
            _row("pods", 2.0),
            _row("newest", 995.0),
        ],
    }
    snapshot = parse(results, time=1000.0, window_s=50.0)
    assert snapshot.age(("ns", "chat")) == pytest.approx(5.0)
    assert snapshot.age(("ns", "other")) is None
    window = snapshot.services[("ns", "chat")]["interactive"]
    assert (window.requests, window.waiting, window.ready_replicas) == (100.0, 2.0, 2)
    observation = build_observation(snapshot.time, snapshot.window_s, snapshot.services[("ns", "chat")])
    assert observation is not None
    assert observation.rps == pytest.approx(2.0)
    assert observation.ttft_p95_ms == pytest.approx(250 + 250 * 5 / 10)  # rank 95 in the (0.25, 0.5] bucket
    assert observation.queue_depth == 2.0


def test_the_routers_queue_and_freshness_join_the_window() -> None:
    """Router pods are labelled with the service they front; their queue is summed over router replicas."""
    wait = [("0.5", 1.0), ("5.0", 2.0), ("+Inf", 2.0)]
    results = {
        "latency": _histogram("router_wait", wait),
        "gauges": [_row("router_queued", 3.0), _row("router_in_flight", 0.0), _row("router_newest", 998.0)],
    }
    snapshot = parse(results, time=1000.0, window_s=60.0)
    assert snapshot.age(("ns", "chat")) is None  # no worker runs
    assert snapshot.router_age(("ns", "chat")) == pytest.approx(2.0)
    observation = build_observation(snapshot.time, snapshot.window_s, snapshot.services[("ns", "chat")])
    assert observation is not None
    assert (observation.router_queued, observation.router_in_flight, observation.running) == (3.0, 0.0, None)
    assert observation.backlog == 3.0
    assert observation.router_wait_p95_ms == pytest.approx(500 + 4500 * 0.9)  # rank 1.9 of 2 in (0.5, 5]
    promql = queries(60)
    assert "goodput:router_queue_depth" in promql["gauges"]
    assert "goodput:router_queue_wait_seconds_bucket" in promql["latency"]


def test_the_router_s_ttft_joins_the_workers_window_and_is_what_clients_see() -> None:
    """The router's TTFT histogram lands in the tier's window beside the workers': the observation keeps both,
    and the TTFT the autoscaler reads for breaches and the error budget is the router's."""
    workers = [("0.25", 90.0), ("0.5", 100.0), ("+Inf", 100.0)]
    router = [("0.25", 60.0), ("0.5", 70.0), ("2.5", 100.0), ("+Inf", 100.0)]
    results = {
        "latency": _histogram("ttft", workers) + _histogram("router_ttft", router),
        "requests": [_row(None, 100.0)],
        "gauges": [_row("running", 1.0), _row("newest", 999.0), _row("router_queued", 4.0)],
    }
    snapshot = parse(results, time=1000.0, window_s=60.0)
    observation = build_observation(
        snapshot.time, snapshot.window_s, snapshot.services[("ns", "chat")], ttft_target_s=1.0
    )
    assert observation is not None
    assert observation.ttft_p95_ms == pytest.approx(250 + 250 * 5 / 10)
    assert observation.router_ttft_p95_ms == pytest.approx(500 + 2000 * 25 / 30)  # rank 95 in (0.5, 2.5]
    assert observation.client_ttft_p95_ms == observation.router_ttft_p95_ms
    assert observation.client_ttft_met == (pytest.approx(70 + 30 * 0.5 / 2), 100.0)
    assert "goodput:router_time_to_first_token_seconds_bucket" in queries(60)["latency"]


def test_the_prefix_caches_counters_join_the_window_as_its_hit_share() -> None:
    """vllm:prefix_cache_queries / _hits count prompt tokens; their increases over the window give the share."""
    results = {
        "requests": [_row(None, 20.0)],
        "gauges": [_row("prefix_cache_queries", 80_000.0), _row("prefix_cache_hits", 20_000.0)],
    }
    snapshot = parse(results, time=1000.0, window_s=60.0)
    window = snapshot.services[("ns", "chat")]["interactive"]
    assert (window.prefix_cache_queries, window.prefix_cache_hits) == (80_000.0, 20_000.0)
    observation = build_observation(snapshot.time, snapshot.window_s, snapshot.services[("ns", "chat")])
    assert observation is not None and observation.prefix_cache_hit_fraction == pytest.approx(0.25)
    promql = queries(60)["gauges"]
    assert "increase(vllm:prefix_cache_queries_total[60s])" in promql
    assert "increase(vllm:prefix_cache_hits_total[60s])" in promql


def test_services_and_tiers_stay_apart_and_nan_is_missing() -> None:
    results = {
        "requests": [
            _row(None, 10.0),
            _row(None, 4.0, tier="batch"),
            _row(None, 7.0, inferenceservice="summarize"),
            _row(None, float("nan"), inferenceservice="broken"),
        ],
        "gauges": [_row("newest", 999.0, inferenceservice="summarize")],
    }
    snapshot = parse(results, time=1000.0, window_s=60.0)
    assert set(snapshot.services[("ns", "chat")]) == {"interactive", "batch"}
    assert snapshot.services[("ns", "summarize")]["interactive"].requests == 7.0
    assert ("ns", "broken") not in snapshot.services  # NaN is no data, not zero traffic


def test_an_error_answer_raises_and_collection_resumes() -> None:
    reader = PrometheusReader(url="http://prometheus", window_s=60, session=None)  # type: ignore[arg-type]
    assert reader._rows(b'{"status": "success", "data": {"result": [{"metric": {}, "value": [1, "2"]}]}}')
    for body in (b'{"status": "error", "error": "bad query"}', b"<html>proxy error</html>", b"[]"):
        with pytest.raises(PrometheusError), gc_paused():
            assert not gc.isenabled()
            reader._rows(body)
        assert gc.isenabled()


def test_the_router_s_queue_age_gauge_histogram_joins_the_window() -> None:
    """Read at the query's time (a gauge, not an increase): requests queued past the target raise the TTFT
    quantile clients see, while the workers' own stays as measured."""
    workers = _cumulative(np.full(100, 0.2))
    queue_age = _cumulative(np.full(20, 15.0))
    results = {
        "latency": _histogram("ttft", workers)
        + _histogram("router_ttft", workers)
        + _histogram("router_queue_age", queue_age),
        "requests": [_row(None, 100.0)],
        "gauges": [_row("running", 1.0), _row("newest", 999.0), _row("router_queued", 20.0)],
    }
    snapshot = parse(results, time=1000.0, window_s=60.0)
    window = snapshot.services[("ns", "chat")]["interactive"]
    assert window.router_queue_age is not None and window.router_queue_age.count == 20.0
    observation = build_observation(
        snapshot.time, snapshot.window_s, {"interactive": window}, ttft_target_s=1.0
    )
    assert observation is not None
    assert observation.ttft_p95_ms < 250.0 < 1000.0 < observation.client_ttft_p95_ms
    latency = queries(60)["latency"]
    assert (
        "sum by (namespace, inferenceservice, tier, le) (goodput:router_queue_age_seconds_bucket)" in latency
    )
