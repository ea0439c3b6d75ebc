"""Per-tenant quotas: a token bucket on tokens per second and a cap on concurrent requests.

A request is charged its estimated tokens (prompt plus the output it may generate) when admitted (one larger than
the bucket once the bucket is full, leaving it in debt); a tenant whose bucket cannot cover it, or who already has
its maximum of requests in flight, gets 429 with the time after which it would be admitted. One tenant's burst
therefore stops at the router instead of at the replicas, where it would delay every other tenant's requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from goodput.router.errors import too_many


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    tokens_per_s: float | None = None
    burst_tokens: float | None = None  # the bucket's size; a second of tokens when unset
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_s is not None and self.tokens_per_s <= 0:
            raise ValueError(f"tokensPerSecond must be > 0, got {self.tokens_per_s}")
        if self.burst_tokens is not None and self.burst_tokens <= 0:
            raise ValueError(f"burstTokens must be > 0, got {self.burst_tokens}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"maxConcurrentRequests must be ≥ 1, got {self.max_concurrent}")

    def share(self, routers: int) -> QuotaSpec:
        """One of `routers` pods' part of this quota: rates and bucket divided, the concurrency cap rounded up
        (each pod admits at least one request)."""
        return QuotaSpec(
            tokens_per_s=None if self.tokens_per_s is None else self.tokens_per_s / routers,
            burst_tokens=None if self.burst_tokens is None else self.burst_tokens / routers,
            max_concurrent=None if self.max_concurrent is None else math.ceil(self.max_concurrent / routers),
        )

    @property
    def capacity(self) -> float:
        if self.burst_tokens is not None:
            return self.burst_tokens
        return self.tokens_per_s or 0.0


@dataclass(slots=True)
class _Tenant:
    spec: QuotaSpec
    tokens: float
    refilled_at: float
    in_flight: int = 0


@dataclass
class Quotas:
    """Quota per tenant: `tenants` by name, `default` for every tenant not named (no quota when None)."""

    default: QuotaSpec | None = None
    tenants: dict[str, QuotaSpec] = field(default_factory=dict)
    _state: dict[str, _Tenant] = field(default_factory=dict)

    def shared(self, routers: int) -> Quotas:
        """The quotas one of `routers` router pods enforces: a Service spreads each tenant's requests evenly over
        the pods, so each holds its share and together they admit the whole quota."""
        return replace(
            self,
            default=None if self.default is None else self.default.share(routers),
            tenants={name: spec.share(routers) for name, spec in self.tenants.items()},
            _state={},
        )

    def admit(self, tenant: str, tokens: int, now: float) -> None:
        """Charge one request or raise a 429 RouterError; a request admitted here must be `release`d."""
        spec = self.tenants.get(tenant, self.default)
        if spec is None:
            return
        state = self._state.get(tenant)
        if state is None:
            state = self._state[tenant] = _Tenant(spec, spec.capacity, now)
        if spec.max_concurrent is not None and state.in_flight >= spec.max_concurrent:
            raise too_many(
                f"tenant {tenant!r} has {state.in_flight} requests in flight, its maximum",
                "concurrency_quota",
                1,
            )
        if spec.tokens_per_s is not None:
            state.tokens = min(spec.capacity, state.tokens + (now - state.refilled_at) * spec.tokens_per_s)
            state.refilled_at = now
            # A request larger than the bucket waits for a full one, then pays in full: the bucket goes into
            # debt, so large requests cannot beat the rate.
            needed = min(float(tokens), spec.capacity)
            if state.tokens < needed:
                wait = (needed - state.tokens) / spec.tokens_per_s
                raise too_many(
                    f"tenant {tenant!r} is over its quota of {spec.tokens_per_s:g} tokens/s",
                    "token_quota",
                    wait,
                )
            state.tokens -= tokens
        state.in_flight += 1

    def release(self, tenant: str) -> None:
        state = self._state.get(tenant)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1
