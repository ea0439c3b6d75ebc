"""Prometheus metrics under vLLM's names, so vLLM dashboards, KEDA rules and our operator read our workers too.

Names, labels and bucket boundaries are the contract's (worker_image.contract: vLLM's v1
`PrometheusStatLogger`, with extra inter-token buckets below 10 ms); the wire names of counters carry
prometheus_client's `_total` suffix exactly as vLLM's do (`vllm:prompt_tokens_total`). One dedicated registry
per worker, so tests can run several servers in one process.
"""

from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from goodput.worker_image import contract as c
from goodput.worker_image.contract import INTER_TOKEN_BUCKETS as INTER_TOKEN_BUCKETS
from goodput.worker_image.contract import TTFT_BUCKETS as TTFT_BUCKETS
from goodput.worker_image.contract import token_count_buckets


class EngineStatsLike(Protocol):
    """The fields of the engine's `EngineStats` that the gauges and cumulative counters mirror."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int


@dataclass(frozen=True)
class FinishedRequest:
    """What the server knows about a request once its last token is out; times in seconds."""

    finish_reason: str
    e2e_latency_s: float
    queue_time_s: float
    num_prompt_tokens: int
    num_generation_tokens: int


class WorkerMetrics:
    """The worker's metrics; observed from the server's event loop and the engine thread (both thread-safe)."""

    def __init__(self, model_name: str, max_model_len: int) -> None:
        disable_created_metrics()  # no `*_created` series, as vLLM (a process-wide switch of prometheus_client)
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = [c.MODEL_NAME_LABEL]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | None = None) -> Histogram:
            """The contract's buckets for a latency histogram; token counts stop at max_model_len."""
            bounds = c.LATENCY_HISTOGRAMS[name] if buckets is None else buckets
            return Histogram(name, doc, labels, buckets=bounds, registry=self.registry)

        self.num_requests_running = gauge(
            c.NUM_REQUESTS_RUNNING, "Number of requests in model execution batches."
        )
        self.num_requests_waiting = gauge(
            c.NUM_REQUESTS_WAITING, "Number of requests waiting to be processed."
        )
        self.kv_cache_usage = gauge(c.KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_cache_usage = gauge(
            c.GPU_CACHE_USAGE,
            "GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
        )
        self.prefix_cache_queries = counter(
            c.PREFIX_CACHE_QUERIES, "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter(
            c.PREFIX_CACHE_HITS, "Prefix cache hits, in terms of number of cached tokens."
        )
        self.num_preemptions = counter(c.NUM_PREEMPTIONS, "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter(c.PROMPT_TOKENS, "Number of prefill tokens processed.")
        self.generation_tokens = counter(c.GENERATION_TOKENS, "Number of generation tokens processed.")
        self.request_success = Counter(
            c.REQUEST_SUCCESS,
            "Count of successfully processed requests.",
            [*labels, c.FINISHED_REASON_LABEL],
            registry=self.registry,
        )
        token_buckets = token_count_buckets(max_model_len)
        self.request_prompt_tokens = histogram(
            c.REQUEST_PROMPT_TOKENS, "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            c.REQUEST_GENERATION_TOKENS, "Number of generation tokens processed.", token_buckets
        )
        self.time_to_first_token = histogram(c.TTFT, "Histogram of time to first token in seconds.")
        self.inter_token_latency = histogram(
            c.INTER_TOKEN_LATENCY, "Histogram of inter-token latency in seconds."
        )
        self.time_per_output_token = histogram(
            c.TIME_PER_OUTPUT_TOKEN,
            "Histogram of time per output token in seconds. "
            "DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
        )
        self.e2e_request_latency = histogram(
            c.E2E_REQUEST_LATENCY, "Histogram of e2e request latency in seconds."
        )
        self.request_queue_time = histogram(
            c.REQUEST_QUEUE_TIME, "Histogram of time spent in WAITING phase for request."
        )
        # Label children exist from the start, so every series is exported (as zero) before the first request.
        for reason in c.FINISH_REASONS:
            self.request_success.labels(model_name, reason)
        for metric in (
            self.num_requests_running, self.num_requests_waiting, self.kv_cache_usage, self.gpu_cache_usage,
            self.prefix_cache_queries, self.prefix_cache_hits, self.num_preemptions, self.prompt_tokens,
            self.generation_tokens, self.request_prompt_tokens, self.request_generation_tokens,
            self.time_to_first_token, self.inter_token_latency, self.time_per_output_token,
            self.e2e_request_latency, self.request_queue_time,
        ):  # fmt: skip
            metric.labels(model_name)
        self._seen_queries = 0
        self._seen_hits = 0
        self._seen_preemptions = 0

    def observe_first_token(self, ttft_s: float, num_prompt_tokens: int) -> None:
        self.time_to_first_token.labels(self.model_name).observe(ttft_s)
        self.prompt_tokens.labels(self.model_name).inc(num_prompt_tokens)

    def observe_tokens(self, num_tokens: int, inter_token_s: float | None) -> None:
        """New output tokens of one request; `inter_token_s` is the gap since its previous ones, if any."""
        self.generation_tokens.labels(self.model_name).inc(num_tokens)
        if inter_token_s is not None:
            self.inter_token_latency.labels(self.model_name).observe(inter_token_s)
            self.time_per_output_token.labels(self.model_name).observe(inter_token_s)

    def observe_finished(self, request: FinishedRequest) -> None:
        self.request_success.labels(self.model_name, request.finish_reason).inc()
        if request.finish_reason == "abort":
            return
        self.e2e_request_latency.labels(self.model_name).observe(request.e2e_latency_s)
        self.request_queue_time.labels(self.model_name).observe(request.queue_time_s)
        self.request_prompt_tokens.labels(self.model_name).observe(request.num_prompt_tokens)
        self.request_generation_tokens.labels(self.model_name).observe(request.num_generation_tokens)

    def refresh(self, stats: EngineStatsLike) -> None:
        """Mirror the engine's gauges; turn its cumulative totals into counter increments."""
        self.num_requests_running.labels(self.model_name).set(stats.num_running)
        self.num_requests_waiting.labels(self.model_name).set(stats.num_waiting)
        self.kv_cache_usage.labels(self.model_name).set(stats.kv_cache_usage)
        self.gpu_cache_usage.labels(self.model_name).set(stats.kv_cache_usage)
        self.prefix_cache_queries.labels(self.model_name).inc(
            max(0, stats.prefix_cache_queries - self._seen_queries)
        )
        self.prefix_cache_hits.labels(self.model_name).inc(max(0, stats.prefix_cache_hits - self._seen_hits))
        self.num_preemptions.labels(self.model_name).inc(
            max(0, stats.num_preemptions - self._seen_preemptions)
        )
        self._seen_queries = stats.prefix_cache_queries
        self._seen_hits = stats.prefix_cache_hits
        self._seen_preemptions = stats.num_preemptions

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
