"""Observations the autoscaler and status tests feed the operator's code: one window at a steady rate."""

from __future__ import annotations

from goodput.policies.types import Observation


def steady_window(
    time: float,
    rps: float,
    ttft: float | None = None,
    tpot: float | None = None,
    queue: float = 0.0,
    ready: int | None = None,
    window: float = 15.0,
    kv: float = 0.2,
) -> Observation:
    """A window ending at `time` in which `rps` requests a second completed and as many were running;
    latencies (p95, ms) are None unless given, as when Prometheus had no sample for them."""
    return Observation(
        time=time, window_s=window, rps=rps, requests=rps * window, ttft_p95_ms=ttft, tpot_p95_ms=tpot,
        kv_cache_usage=kv, queue_depth=queue, running=rps, ready_replicas=ready,
    )  # fmt: skip
