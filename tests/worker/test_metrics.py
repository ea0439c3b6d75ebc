"""The worker's metrics carry vLLM's wire names, buckets and label, and mirror the engine's cumulative stats."""

from prometheus_client.parser import text_string_to_metric_families

from goodput.worker_image.engine import EngineStats
from goodput.worker_image.metrics import (
    INTER_TOKEN_BUCKETS,
    TTFT_BUCKETS,
    FinishedRequest,
    WorkerMetrics,
    token_count_buckets,
)


def stats(
    running: int, waiting: int, kv_usage: float, queries: int, hits: int, preemptions: int
) -> EngineStats:
    """What the engine reports; the block counts are not exported."""
    return EngineStats(running, waiting, kv_usage, 0, 0, queries, hits, preemptions)


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted({"model_name": "m", **labels}.items())))]


def test_wire_names_match_vllm() -> None:
    text = WorkerMetrics("m", 2048).render()[0].decode()
    for name in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_sum",
        "vllm:time_per_output_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_prompt_tokens_bucket",
        "vllm:request_generation_tokens_bucket",
        'vllm:request_success_total{finished_reason="stop",model_name="m"}',
    ):
        assert name in text, name
    assert 'model_name="m"' in text


def test_buckets_follow_vllm_with_fine_inter_token_buckets() -> None:
    assert token_count_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert TTFT_BUCKETS[0] == 0.001 and TTFT_BUCKETS[-1] == 2560.0 and len(TTFT_BUCKETS) == 22
    assert [b for b in INTER_TOKEN_BUCKETS if b < 0.01] == [0.001, 0.0025, 0.005, 0.0075]
    assert list(INTER_TOKEN_BUCKETS) == sorted(INTER_TOKEN_BUCKETS)
    metrics = WorkerMetrics("m", 2048)
    metrics.observe_tokens(1, 0.003)
    assert value(metrics, "vllm:inter_token_latency_seconds_bucket", le="0.0025") == 0
    assert value(metrics, "vllm:inter_token_latency_seconds_bucket", le="0.005") == 1
    assert value(metrics, "vllm:time_per_output_token_seconds_count") == 1


def test_request_observations() -> None:
    metrics = WorkerMetrics("m", 2048)
    metrics.observe_first_token(0.25, num_prompt_tokens=7)
    metrics.observe_tokens(1, None)
    metrics.observe_tokens(2, 0.01)
    metrics.observe_finished(FinishedRequest("length", 0.5, 0.1, 7, 3))
    metrics.observe_finished(FinishedRequest("abort", 0.0, 0.0, 0, 0))
    assert value(metrics, "vllm:time_to_first_token_seconds_sum") == 0.25
    assert value(metrics, "vllm:prompt_tokens_total") == 7
    assert value(metrics, "vllm:generation_tokens_total") == 3
    assert value(metrics, "vllm:inter_token_latency_seconds_count") == 1
    assert value(metrics, "vllm:request_success_total", finished_reason="length") == 1
    assert value(metrics, "vllm:request_success_total", finished_reason="abort") == 1
    # Aborted requests count as finished but do not skew the latency and size histograms.
    assert value(metrics, "vllm:e2e_request_latency_seconds_count") == 1
    assert value(metrics, "vllm:request_queue_time_seconds_sum") == 0.1
    assert value(metrics, "vllm:request_generation_tokens_sum") == 3


def test_refresh_mirrors_gauges_and_turns_totals_into_increments() -> None:
    metrics = WorkerMetrics("m", 2048)
    metrics.refresh(stats(3, 2, 0.5, queries=10, hits=4, preemptions=1))
    metrics.refresh(stats(1, 0, 0.25, queries=30, hits=12, preemptions=1))
    assert value(metrics, "vllm:num_requests_running") == 1
    assert value(metrics, "vllm:num_requests_waiting") == 0
    assert value(metrics, "vllm:kv_cache_usage_perc") == 0.25
    assert value(metrics, "vllm:gpu_cache_usage_perc") == 0.25
    assert value(metrics, "vllm:prefix_cache_queries_total") == 30
    assert value(metrics, "vllm:prefix_cache_hits_total") == 12
    assert value(metrics, "vllm:num_preemptions_total") == 1


def test_registries_are_independent() -> None:
    first, second = WorkerMetrics("m", 64), WorkerMetrics("m", 64)
    first.observe_first_token(1.0, 1)
    assert value(second, "vllm:time_to_first_token_seconds_count") == 0


def test_no_created_series() -> None:
    """vLLM disables prometheus_client's `*_created` series; one per counter and histogram is noise."""
    metrics = WorkerMetrics("m", 100)
    metrics.observe_first_token(0.1, 5)
    text = metrics.render()[0].decode()
    assert "vllm:time_to_first_token_seconds_count" in text
    assert "_created" not in text
