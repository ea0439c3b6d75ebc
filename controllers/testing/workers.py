"""Synthetic workers: one /metrics endpoint serving vLLM-named series for many services, under control.

Each (namespace, inferenceservice, tier) gets the worker's histograms, counter and gauges, with exactly the
labels Prometheus would attach after relabeling the pod labels. Counts advance on every scrape by rps × the
time since the last scrape, all at the configured latencies, so tests set "31 rps at TTFT 820 ms" directly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.observe import ITL_BUCKETS, TTFT_BUCKETS, token_buckets

TOKEN_BUCKETS = token_buckets(100_000)
LABELS = ["namespace", "inferenceservice", "tier", "model_name"]
Key = tuple[str, str, str]  # (namespace, inferenceservice, tier)


@dataclass(frozen=True)
class Traffic:
    """What the synthetic workers of one tier report: a rate and the latency every request sees."""

    rps: float = 0.0
    ttft_s: float = 0.05
    itl_s: float = 0.005
    prompt_tokens: int = 64
    output_tokens: int = 16
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.1
    model_name: str = "tiny"


@dataclass
class _Series:
    traffic: Traffic
    requests: float = 0.0  # cumulative, fractional until scraped
    last: float = field(default_factory=time.time)


def _bucket_counts(bounds: tuple[float, ...], value: float, count: float) -> list[tuple[str, float]]:
    """Cumulative buckets with every observation at `value` (Prometheus `le` semantics)."""
    return [(repr(float(le)), count if value <= le else 0.0) for le in bounds] + [("+Inf", count)]


class SyntheticWorkers(Collector):
    def __init__(self) -> None:
        self._series: dict[Key, _Series] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def set(self, key: Key, traffic: Traffic) -> None:
        """Start (or change) a tier's traffic; counts so far are kept, as a running worker's would be."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                self._series[key] = _Series(traffic)
            else:
                self._advance(series, time.time())
                series.traffic = traffic

    def update(self, key: Key, **changes: object) -> None:
        with self._lock:
            current = self._series[key].traffic
        self.set(key, replace(current, **changes))

    def remove(self, key: Key) -> None:
        with self._lock:
            self._series.pop(key, None)

    @staticmethod
    def _advance(series: _Series, now: float) -> None:
        series.requests += series.traffic.rps * max(0.0, now - series.last)
        series.last = now

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        families = {
            "ttft": HistogramMetricFamily("vllm:time_to_first_token_seconds", "TTFT", labels=LABELS),
            "itl": HistogramMetricFamily("vllm:inter_token_latency_seconds", "ITL", labels=LABELS),
            "prompt": HistogramMetricFamily("vllm:request_prompt_tokens", "prompt tokens", labels=LABELS),
            "output": HistogramMetricFamily("vllm:request_generation_tokens", "output tokens", labels=LABELS),
        }
        success = CounterMetricFamily(
            "vllm:request_success", "finished requests", labels=[*LABELS, "finished_reason"]
        )
        running = GaugeMetricFamily("vllm:num_requests_running", "running", labels=LABELS)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "waiting", labels=LABELS)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV usage", labels=LABELS)
        with self._lock:
            for (namespace, service, tier), series in self._series.items():
                self._advance(series, now)
                t = series.traffic
                labels = [namespace, service, tier, t.model_name]
                n = float(math.floor(series.requests))
                tokens = n * t.output_tokens
                for name, bounds, value, count in (
                    ("ttft", TTFT_BUCKETS, t.ttft_s, n),
                    ("itl", ITL_BUCKETS, t.itl_s, tokens),
                    ("prompt", TOKEN_BUCKETS, float(t.prompt_tokens), n),
                    ("output", TOKEN_BUCKETS, float(t.output_tokens), n),
                ):
                    families[name].add_metric(labels, _bucket_counts(bounds, value, count), value * count)
                success.add_metric([*labels, "stop"], n)
                running.add_metric(labels, t.running)
                waiting.add_metric(labels, t.waiting)
                kv.add_metric(labels, t.kv_cache_usage)
        yield from families.values()
        yield from (success, running, waiting, kv)

    def serve(self, address: str = "127.0.0.1") -> int:
        """Serve /metrics in the text format, as the worker does.

        Not prometheus_client's own server: it answers Prometheus in OpenMetrics, whose encoder rewrites
        `vllm:` names to `vllm_`, and the operator would find no series.
        """
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return

        self._server = ThreadingHTTPServer((address, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="synthetic-workers", daemon=True).start()
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
