"""The router's command line and quota file; every bad value is an error naming its flag or field."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from goodput.policies.routing import KINDS, RoutingPolicy
from goodput.router.dispatch import QueueLimits
from goodput.router.quota import Quotas, QuotaSpec
from goodput.router.requests import CLASSES, RequestClass

DEFAULT_MAX_REQUESTS = 256
DEFAULT_MAX_PREFILL = RoutingPolicy().max_prefill_tokens  # without a model to derive it from
QUOTA_FIELDS = {
    "tokensPerSecond": "tokens_per_s",
    "burstTokens": "burst_tokens",
    "maxConcurrentRequests": "max_concurrent",
}


@dataclass(frozen=True)
class RouterConfig:
    host: str
    port: int
    default_class: RequestClass
    static: dict[RequestClass, list[str]]  # tier → upstream URLs, when not watching EndpointSlices
    namespace: str | None
    services: dict[RequestClass, str]  # tier → the Service whose EndpointSlices list its replicas
    policy: RoutingPolicy  # every tier's, but for the bounds set per tier below
    max_requests: dict[RequestClass, int]
    max_prefill_tokens: dict[RequestClass, int]
    limits: QueueLimits
    quotas: Quotas
    api_key: str | None
    cache_blocks: int
    refresh_s: float
    drain_s: float

    def tier_policy(self, tier: RequestClass) -> RoutingPolicy:
        """The routing policy of one tier: every tier's, with the bounds set for this one."""
        return replace(
            self.policy,
            max_requests=self.max_requests.get(tier, self.policy.max_requests),
            max_prefill_tokens=self.max_prefill_tokens.get(tier, self.policy.max_prefill_tokens),
        )


def _tier_value(flag: str, value: str) -> tuple[RequestClass, str]:
    tier, sep, rest = value.partition("=")
    if not sep or tier not in CLASSES or not rest:
        raise SystemExit(f"{flag}: expected TIER=VALUE with TIER one of {list(CLASSES)}, got {value!r}")
    return tier, rest  # type: ignore[return-value]


def _per_tier(
    p: argparse.ArgumentParser, flag: str, values: list[str], tiers: set[str], default: int
) -> tuple[int, dict[RequestClass, int]]:
    """A bound given as N (every tier) or TIER=N, repeatable: the value for all tiers and those per tier."""
    everywhere, per_tier = default, {}
    for value in values:
        tier, n = _tier_value(flag, value) if "=" in value else (None, value)
        if not n.isdigit() or int(n) < 1:
            p.error(f"{flag}: expected a positive integer, got {n!r}")
        if tier is None:
            everywhere = int(n)
        elif tier not in tiers:
            p.error(f"{flag}: no tier {tier!r} among --upstream/--service")
        else:
            per_tier[tier] = int(n)
    return everywhere, per_tier


def parse_quotas(data: Any) -> Quotas:
    if not isinstance(data, dict) or set(data) - {"default", "tenants"}:
        raise ValueError("quotas: expected an object with 'default' and/or 'tenants'")

    def spec(where: str, raw: Any) -> QuotaSpec:
        if not isinstance(raw, dict) or set(raw) - set(QUOTA_FIELDS):
            raise ValueError(f"{where}: expected an object with fields {sorted(QUOTA_FIELDS)}")
        try:
            return QuotaSpec(**{QUOTA_FIELDS[k]: v for k, v in raw.items()})
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    tenants = data.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ValueError("quotas.tenants: expected an object of tenant name → quota")
    return Quotas(
        default=spec("quotas.default", data["default"]) if data.get("default") is not None else None,
        tenants={name: spec(f"quotas.tenants.{name}", raw) for name, raw in tenants.items()},
    )


def parse_args(argv: list[str] | None = None) -> RouterConfig:
    p = argparse.ArgumentParser(prog="python -m goodput.router", description="goodput's per-service router")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--default-class", choices=CLASSES, default="interactive")
    p.add_argument("--upstream", action="append", default=[], metavar="TIER=URL", help="a static replica")
    p.add_argument("--namespace", help="watch EndpointSlices in this namespace (with --service)")
    p.add_argument("--service", action="append", default=[], metavar="TIER=NAME", help="a tier's Service")
    p.add_argument("--policy", choices=KINDS, default="prefix")
    p.add_argument(
        "--max-requests-per-replica",
        action="append",
        default=[],
        metavar="[TIER=]N",
        help="requests a replica holds before the router queues (the tier's max batch); per tier or for all",
    )
    p.add_argument(
        "--max-prefill-tokens-per-replica",
        action="append",
        default=[],
        metavar="[TIER=]N",
        help="in-flight prefill tokens a replica holds before the router queues (the operator derives it "
        "from the TTFT target and the replica's prefill speed); per tier or for all",
    )
    p.add_argument(
        "--block-tokens", type=int, default=64, help="prefix hashing granularity: a multiple of the KV block"
    )
    p.add_argument(
        "--prefix-cache-blocks", type=int, default=16384, help="blocks a replica is assumed to keep"
    )
    p.add_argument("--max-queue", type=int, default=1000, help="requests queued per tier before 429")
    p.add_argument("--max-wait-s", type=float, default=60.0, help="queue wait before 503")
    p.add_argument("--drain-s", type=float, default=20.0, help="on SIGTERM, how long streams may finish")
    p.add_argument("--refresh-s", type=float, default=1.0, help="interval of the workers' /metrics refresh")
    quota_source = p.add_mutually_exclusive_group()
    quota_source.add_argument(
        "--quotas", type=Path, help="a JSON file: {default: QUOTA, tenants: {NAME: QUOTA}}"
    )
    quota_source.add_argument("--quotas-json", help="the same JSON, inline (the operator passes it so)")
    p.add_argument(
        "--quota-routers",
        type=int,
        default=1,
        help="router pods the quotas are shared by: each enforces 1/N of every quota",
    )
    p.add_argument(
        "--api-key-env", default="GOODPUT_API_KEY", help="environment variable holding the API key"
    )
    a = p.parse_args(argv)
    static: dict[RequestClass, list[str]] = {}
    for value in a.upstream:
        tier, url = _tier_value("--upstream", value)
        static.setdefault(tier, []).append(url.rstrip("/"))
    services = dict(_tier_value("--service", v) for v in a.service)
    if bool(services) == bool(static) or bool(services) != bool(a.namespace):
        p.error("give either --upstream, or --namespace with --service")
    tiers = set(services or static)
    everywhere, max_requests = _per_tier(
        p, "--max-requests-per-replica", a.max_requests_per_replica, tiers, DEFAULT_MAX_REQUESTS
    )
    all_prefill, max_prefill_tokens = _per_tier(
        p, "--max-prefill-tokens-per-replica", a.max_prefill_tokens_per_replica, tiers, DEFAULT_MAX_PREFILL
    )
    try:
        policy = RoutingPolicy(
            kind=a.policy,
            max_requests=everywhere,
            max_prefill_tokens=all_prefill,
            block_tokens=a.block_tokens,
        )
        raw = a.quotas.read_text() if a.quotas else a.quotas_json
        quotas = parse_quotas(json.loads(raw)) if raw else Quotas()
    except (ValueError, OSError) as error:
        p.error(str(error))
    if a.quota_routers < 1:
        p.error(f"--quota-routers: expected a positive integer, got {a.quota_routers}")
    if a.max_queue < 0 or a.prefix_cache_blocks < 0 or min(a.max_wait_s, a.refresh_s, a.drain_s) <= 0:
        p.error("--max-queue and --prefix-cache-blocks must be ≥ 0; --max-wait-s, --refresh-s, --drain-s > 0")
    return RouterConfig(
        host=a.host,
        port=a.port,
        default_class=a.default_class,
        static=static,
        namespace=a.namespace,
        services=services,
        policy=policy,
        max_requests=max_requests,
        max_prefill_tokens=max_prefill_tokens,
        limits=QueueLimits(max_queue=a.max_queue, max_wait_s=a.max_wait_s),
        quotas=quotas.shared(a.quota_routers),
        api_key=os.environ.get(a.api_key_env) or None,
        cache_blocks=a.prefix_cache_blocks,
        refresh_s=a.refresh_s,
        drain_s=a.drain_s,
    )
