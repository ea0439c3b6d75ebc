"""Synthetic workers: one /metrics endpoint serving vLLM-named series for many services, under control.

Each (namespace, inferenceservice, tier) gets the worker's histograms, counter and gauges, with exactly the
labels Prometheus would attach after relabeling the pod labels. Counts advance on every scrape by rps × the
time since the last scrape, all at the configured latencies, so tests set "31 rps at TTFT 820 ms" directly.
A tier may also have a router's queue gauges (`set_router`), which stay while its workers are gone (at zero).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from goodput.worker_image import contract as c
from testkit.metrics_http import serve_metrics

HISTOGRAMS = (
    (c.TTFT, c.TTFT_BUCKETS),
    (c.INTER_TOKEN_LATENCY, c.INTER_TOKEN_BUCKETS),
    (c.REQUEST_PROMPT_TOKENS, c.TOKEN_COUNT_BUCKETS),
    (c.REQUEST_GENERATION_TOKENS, c.TOKEN_COUNT_BUCKETS),
)
SUCCESS = c.total(c.REQUEST_SUCCESS)
PREFIX_QUERIES, PREFIX_HITS = c.total(c.PREFIX_CACHE_QUERIES), c.total(c.PREFIX_CACHE_HITS)
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
    prefix_cache_hit_fraction: float = 0.0  # of the prompt tokens looked up in the prefix cache
    model_name: str = "tiny"


@dataclass
class _Series:
    traffic: Traffic
    requests: float = 0.0  # cumulative, fractional until scraped
    last: float = field(default_factory=time.time)


def _bucket_counts(bounds: tuple[float, ...], value: float, count: float) -> list[tuple[str, float]]:
    """Cumulative buckets with every observation at `value` (Prometheus `le` semantics)."""
    return [(repr(float(le)), count if value <= le else 0.0) for le in bounds] + [("+Inf", count)]


class SyntheticWorkers:
    def __init__(self) -> None:
        self._series: dict[Key, _Series] = {}
        self._routers: dict[Key, tuple[float, float]] = {}  # (queued, in flight)
        self._lock = threading.Lock()
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

    def set_router(self, key: Key, queued: float, in_flight: float = 0.0) -> None:
        """The router's gauges for one tier: requests it holds for a replica and requests sent to one."""
        with self._lock:
            self._routers[key] = (queued, in_flight)

    @staticmethod
    def _advance(series: _Series, now: float) -> None:
        series.requests += series.traffic.rps * max(0.0, now - series.last)
        series.last = now

    def render(self) -> bytes:
        """The Prometheus text exposition of every series, written directly: fast enough for 1000 services."""
        now = time.time()
        histograms: dict[str, list[str]] = {name: [] for name, _ in HISTOGRAMS}
        success, running, waiting, kv, queried, hit = [], [], [], [], [], []
        with self._lock:
            for (namespace, service, tier), series in self._series.items():
                self._advance(series, now)
                t = series.traffic
                labels = (
                    f'{c.NAMESPACE_LABEL}="{namespace}",{c.SERVICE_LABEL}="{service}",'
                    f'{c.TIER_LABEL}="{tier}",{c.MODEL_NAME_LABEL}="{t.model_name}"'
                )
                n = float(math.floor(series.requests))
                for (name, bounds), value, count in zip(
                    HISTOGRAMS,
                    (t.ttft_s, t.itl_s, float(t.prompt_tokens), float(t.output_tokens)),
                    (n, n * t.output_tokens, n, n),
                    strict=True,
                ):
                    lines = histograms[name]
                    for le, cumulative in _bucket_counts(bounds, value, count):
                        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}')
                    lines.append(f"{name}_sum{{{labels}}} {value * count}")
                    lines.append(f"{name}_count{{{labels}}} {count}")
                success.append(f'{SUCCESS}{{{labels},{c.FINISHED_REASON_LABEL}="stop"}} {n}')
                queried.append(f"{PREFIX_QUERIES}{{{labels}}} {n * t.prompt_tokens}")
                hit.append(f"{PREFIX_HITS}{{{labels}}} {n * t.prompt_tokens * t.prefix_cache_hit_fraction}")
                running.append(f"{c.NUM_REQUESTS_RUNNING}{{{labels}}} {t.running}")
                waiting.append(f"{c.NUM_REQUESTS_WAITING}{{{labels}}} {t.waiting}")
                kv.append(f"{c.KV_CACHE_USAGE}{{{labels}}} {t.kv_cache_usage}")
            routed = [
                (f'{c.NAMESPACE_LABEL}="{n}",{c.SERVICE_LABEL}="{s}",{c.TIER_LABEL}="{t}"', queued, in_flight)
                for (n, s, t), (queued, in_flight) in self._routers.items()
            ]
        out: list[str] = []
        for name, _ in HISTOGRAMS:
            out += [f"# TYPE {name} histogram", *histograms[name]]
        out += [f"# TYPE {SUCCESS} counter", *success]
        out += [f"# TYPE {PREFIX_QUERIES} counter", *queried, f"# TYPE {PREFIX_HITS} counter", *hit]
        for name, lines in (
            (c.NUM_REQUESTS_RUNNING, running),
            (c.NUM_REQUESTS_WAITING, waiting),
            (c.KV_CACHE_USAGE, kv),
            (c.ROUTER_QUEUE_DEPTH, [f"{c.ROUTER_QUEUE_DEPTH}{{{labels}}} {q}" for labels, q, _ in routed]),
            (c.ROUTER_IN_FLIGHT, [f"{c.ROUTER_IN_FLIGHT}{{{labels}}} {f}" for labels, _, f in routed]),
        ):
            if lines or not name.startswith("goodput:"):  # the workers' families always, a router's if any
                out += [f"# TYPE {name} gauge", *lines]
        return ("\n".join(out) + "\n").encode()

    def serve(self, address: str = "127.0.0.1") -> int:
        """Serve /metrics in the text format, as the worker does (see testkit.metrics_http for why)."""
        self._server = serve_metrics(
            lambda: (self.render(), CONTENT_TYPE_LATEST), address, "synthetic-workers"
        )
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
