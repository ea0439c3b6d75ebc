"""The Prometheus reader: a fixed set of four PromQL queries per interval, for every service at once.

Each query aggregates `by (namespace, inferenceservice, tier[, le])`, so the cost per interval does not grow
with the number of services in queries, only in result rows. Several metrics share one query through
`label_replace(..., "series", "<name>", "", "")` joined with `or`. The rows become `policies.observe`
TierWindows, so the operator computes observations through the same code as the simulator.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from goodput.policies.observe import Histogram, TierWindow
from goodput.worker_image import contract as c

GROUP = f"{c.NAMESPACE_LABEL}, {c.SERVICE_LABEL}, {c.TIER_LABEL}"
ServiceKey = tuple[str, str]  # (namespace, inferenceservice)

_HISTOGRAMS = {
    "latency": (
        ("ttft", c.TTFT),
        ("itl", c.INTER_TOKEN_LATENCY),
        ("itl", c.TIME_PER_OUTPUT_TOKEN),  # older vLLM; used only where the new one is absent
        ("router_wait", c.ROUTER_QUEUE_WAIT),
        ("router_ttft", c.ROUTER_TTFT),
    ),
    "tokens": (
        ("prompt_tokens", c.REQUEST_PROMPT_TOKENS),
        ("output_tokens", c.REQUEST_GENERATION_TOKENS),
    ),
}


def _tagged(expr: str, series: str) -> str:
    return f'label_replace({expr}, "series", "{series}", "", "")'


def queries(window_s: int) -> dict[str, str]:
    """The interval's PromQL, by name. Always the same four, whatever the number of services."""

    def histogram(metric: str) -> str:
        return f"sum by ({GROUP}, le) (increase({metric}_bucket[{window_s}s]))"

    out = {
        name: " or ".join(_tagged(histogram(metric), series) for series, metric in members)
        for name, members in _HISTOGRAMS.items()
    }
    # a gauge histogram: its buckets at the query's time, not their increase
    queue_age = f"sum by ({GROUP}, le) ({c.ROUTER_QUEUE_AGE}_bucket)"
    out["latency"] += " or " + _tagged(queue_age, "router_queue_age")
    out["requests"] = f"sum by ({GROUP}) (increase({c.total(c.REQUEST_SUCCESS)}[{window_s}s]))"
    gauges = {
        "running": f"sum by ({GROUP}) ({c.NUM_REQUESTS_RUNNING})",
        "waiting": f"sum by ({GROUP}) ({c.NUM_REQUESTS_WAITING})",
        "kv_cache_usage": f"avg by ({GROUP}) ({c.KV_CACHE_USAGE} or {c.GPU_CACHE_USAGE})",
        "pods": f"count by ({GROUP}) ({c.NUM_REQUESTS_RUNNING})",
        "newest": f"max by ({GROUP}) (timestamp({c.NUM_REQUESTS_RUNNING}))",
        # the prefix cache over the window: prompt tokens looked up, and those it held (a scalar like the gauges)
        "prefix_cache_queries": f"sum by ({GROUP}) (increase({c.total(c.PREFIX_CACHE_QUERIES)}[{window_s}s]))",
        "prefix_cache_hits": f"sum by ({GROUP}) (increase({c.total(c.PREFIX_CACHE_HITS)}[{window_s}s]))",
        # the router's queue (demand not admitted yet) and its freshness: at zero replicas it is all there is
        "router_queued": f"sum by ({GROUP}) ({c.ROUTER_QUEUE_DEPTH})",
        "router_in_flight": f"sum by ({GROUP}) ({c.ROUTER_IN_FLIGHT})",
        "router_newest": f"max by ({GROUP}) (timestamp({c.ROUTER_QUEUE_DEPTH}))",
    }
    out["gauges"] = " or ".join(_tagged(expr, series) for series, expr in gauges.items())
    return out


class PrometheusError(Exception):
    """Prometheus did not answer, or answered with an error: every service's metrics are missing."""


@dataclass(frozen=True)
class Snapshot:
    """One interval's view of all services: per service, per tier, the raw window."""

    time: float
    window_s: float
    services: dict[ServiceKey, dict[str, TierWindow]] = field(default_factory=dict)
    newest_sample: dict[ServiceKey, float] = field(default_factory=dict)  # unix seconds, workers' series
    router_newest: dict[ServiceKey, float] = field(default_factory=dict)  # unix seconds, the router's series

    def age(self, key: ServiceKey) -> float | None:
        """Seconds since the service's newest worker sample; None when Prometheus has none."""
        return self._age(self.newest_sample.get(key))

    def router_age(self, key: ServiceKey) -> float | None:
        """Seconds since the newest sample of the service's router; None without one."""
        return self._age(self.router_newest.get(key))

    def _age(self, newest: float | None) -> float | None:
        return None if newest is None else max(0.0, self.time - newest)


def _value(row: dict[str, Any]) -> float | None:
    value = float(row["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


def _service_tier(labels: dict[str, str]) -> tuple[ServiceKey, str]:
    return (labels[c.NAMESPACE_LABEL], labels[c.SERVICE_LABEL]), labels.get(c.TIER_LABEL, "")


class SnapshotBuilder:
    """Takes the rows of one query at a time, so only one decoded answer need be alive at once (see `read`)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[ServiceKey, str, str], dict[str, float]] = defaultdict(dict)
        self.scalars: dict[tuple[ServiceKey, str], dict[str, float]] = defaultdict(dict)

    def add(self, name: str, rows: list[dict[str, Any]]) -> None:
        """The rows of the query `name` (one of `queries`); rows of other names are ignored."""
        if name in _HISTOGRAMS:
            for row in rows:
                labels = row["metric"]
                value = _value(row)
                if value is None or "le" not in labels:
                    continue
                self.buckets[(*_service_tier(labels), labels["series"])][labels["le"]] = value
        elif name in ("requests", "gauges"):
            for row in rows:
                labels, value = row["metric"], _value(row)
                if value is not None:
                    series = "requests" if name == "requests" else labels["series"]
                    self.scalars[_service_tier(labels)][series] = value

    def build(self, time: float, window_s: float) -> Snapshot:
        windows: dict[ServiceKey, dict[str, TierWindow]] = defaultdict(dict)
        for (service, tier, series), by_le in self.buckets.items():
            window = windows[service].get(tier, TierWindow())
            windows[service][tier] = replace(window, **{series: Histogram.from_le(by_le)})
        newest: dict[ServiceKey, float] = {}
        router_newest: dict[ServiceKey, float] = {}
        for (service, tier), values in self.scalars.items():
            window = windows[service].get(tier, TierWindow())
            pods = values.get("pods")
            windows[service][tier] = replace(
                window,
                requests=values.get("requests"),
                running=values.get("running"),
                waiting=values.get("waiting"),
                kv_cache_usage=values.get("kv_cache_usage"),
                ready_replicas=None if pods is None else round(pods),
                prefix_cache_queries=values.get("prefix_cache_queries"),
                prefix_cache_hits=values.get("prefix_cache_hits"),
                router_queued=values.get("router_queued"),
                router_in_flight=values.get("router_in_flight"),
            )
            for series, latest in (("newest", newest), ("router_newest", router_newest)):
                if series in values:
                    latest[service] = max(latest.get(service, 0.0), values[series])
        return Snapshot(
            time=time,
            window_s=window_s,
            services=dict(windows),
            newest_sample=newest,
            router_newest=router_newest,
        )


def parse(results: dict[str, list[dict[str, Any]]], time: float, window_s: float) -> Snapshot:
    """Rows of the four queries → a Snapshot. Pure, so it is tested on recorded answers."""
    builder = SnapshotBuilder()
    for name, rows in results.items():
        builder.add(name, rows)
    return builder.build(time, window_s)


@dataclass
class PrometheusReader:
    """Runs the fixed queries against one Prometheus; counts them so the benchmark can report the figure."""

    url: str
    window_s: int
    session: aiohttp.ClientSession
    queries_sent: int = 0

    @classmethod
    def connect(cls, url: str, window_s: int, timeout_s: float) -> PrometheusReader:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        return cls(url=url.rstrip("/"), window_s=window_s, session=session)

    async def close(self) -> None:
        await self.session.close()

    async def _query(self, promql: str, time: float) -> bytes:
        """The raw answer; decoding waits until every answer is in (see `read`)."""
        self.queries_sent += 1
        try:
            async with self.session.post(
                f"{self.url}/api/v1/query", data={"query": promql, "time": f"{time:.3f}"}
            ) as response:
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {error!r}") from error

    async def read(self, time: float) -> Snapshot:
        """All services' windows ending at `time`; the four queries run concurrently (Prometheus is parallel)."""
        names, texts = zip(*queries(self.window_s).items(), strict=True)
        bodies = list(await asyncio.gather(*(self._query(promql, time) for promql in texts)))
        return self._snapshot(names, bodies, time)

    def _snapshot(self, names: tuple[str, ...], bodies: list[bytes], time: float) -> Snapshot:
        """Decode and fold in one answer at a time, then drop it (and its raw bytes) before the next.

        The decoded answers are the operator's largest transient allocation (about 1 KB of Python objects per
        row; at 1000 services the latency answer alone is ~47k rows). Holding all four at once set the
        process's peak resident memory; one at a time, the peak is the largest answer's.
        """
        builder = SnapshotBuilder()
        with gc_paused():
            for index, name in enumerate(names):
                rows = self._rows(bodies[index])
                bodies[index] = b""
                builder.add(name, rows)
                del rows  # freed by reference counting while collection is off: none of it reaches the GC
            return builder.build(time, float(self.window_s))

    def _rows(self, body: bytes) -> list[dict[str, Any]]:
        try:
            answer = json.loads(body)
        except ValueError as error:
            raise PrometheusError(f"Prometheus at {self.url} answered with no JSON: {error}") from error
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise PrometheusError(f"Prometheus rejected a query: {error}")
        return list(answer["data"]["result"])


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while one interval's answers are decoded and parsed.

    They are tens of thousands of small acyclic containers; the collections their allocations trigger also
    walk the operator's heap (kopf keeps every resource's body). Pausing halved the CPU of a 1000-service
    read. Use it only around synchronous code, so no other coroutine runs with collection off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
