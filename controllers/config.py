"""Operator settings from GOODPUT_OPERATOR_* environment variables, validated once at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from goodput.policies.observe import DEFAULT_WINDOW_S

PREFIX = "GOODPUT_OPERATOR_"


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str = "http://prometheus.monitoring.svc:9090"
    poll_interval_s: float = 15.0  # the shared poller's tick; a policy's longer interval skips ticks
    # PromQL range of increase(): at least the poll interval (or what happens between polls goes unseen) and
    # three scrape intervals (the PodMonitors scrape every 5 s)
    window_s: int = DEFAULT_WINDOW_S
    request_timeout_s: float = 10.0  # each API server and Prometheus request
    max_in_flight: int = 32  # concurrent writes to the API server
    metrics_port: int = 9090  # the operator's own /metrics; 0 picks a free port, -1 disables
    namespaces: tuple[str, ...] = ()  # watched by `python operator/main.py`; empty: all namespaces
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"  # Kopf's probe server (`python operator/main.py`)

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"{PREFIX}POLL_INTERVAL_S must be > 0, got {self.poll_interval_s}")
        if self.window_s < 1:
            raise ValueError(f"{PREFIX}WINDOW_S must be >= 1, got {self.window_s}")
        if self.window_s < self.poll_interval_s:
            raise ValueError(
                f"{PREFIX}WINDOW_S ({self.window_s}) must be at least {PREFIX}POLL_INTERVAL_S "
                f"({self.poll_interval_s:g}): a shorter range misses what happens between polls"
            )
        if self.request_timeout_s <= 0:
            raise ValueError(f"{PREFIX}REQUEST_TIMEOUT_S must be > 0, got {self.request_timeout_s}")
        if self.max_in_flight < 1:
            raise ValueError(f"{PREFIX}MAX_IN_FLIGHT must be >= 1, got {self.max_in_flight}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: object) -> str:
            return env.get(PREFIX + name, str(default)).strip()

        namespaces = tuple(ns.strip() for ns in get("NAMESPACES", "").split(",") if ns.strip())
        try:
            return cls(
                prometheus_url=get("PROMETHEUS_URL", defaults.prometheus_url),
                poll_interval_s=float(get("POLL_INTERVAL_S", defaults.poll_interval_s)),
                window_s=int(get("WINDOW_S", defaults.window_s)),
                request_timeout_s=float(get("REQUEST_TIMEOUT_S", defaults.request_timeout_s)),
                max_in_flight=int(get("MAX_IN_FLIGHT", defaults.max_in_flight)),
                metrics_port=int(get("METRICS_PORT", defaults.metrics_port)),
                namespaces=namespaces,
                liveness_endpoint=get("LIVENESS", defaults.liveness_endpoint),
            )
        except ValueError as error:
            raise ValueError(f"invalid operator setting: {error}") from None
