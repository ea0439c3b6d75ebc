"""Which replica of a tier takes a request: the one decision the router process and the simulator share.

Outstanding work of a replica is counted in prefill tokens: the uncached prompt tokens sent to it whose first
token has not come back, plus a fixed token-equivalent per running or waiting request (its share of the decode
steps).
A replica is *at its bound* when its requests, its in-flight prefill tokens or its KV usage reach the policy's
limits; when every replica is, the request waits in the router's queue rather than in a replica's, in
`queue_order`, and goes to the first replica below its bound when its turn comes.

- `random`: a uniform choice among replicas below their bound (what a Kubernetes Service does, bounded).
- `least_load`: the least outstanding work.
- `prefix`: the least predicted time to first token, in prefill tokens: the replica's outstanding work plus the
  prompt tokens it would have to compute (the prompt less the prefix it holds). This is prefix affinity whose load
  bound is the size of the cached prefix: a replica holding 40 blocks of the prompt is worth waiting behind up to
  40 blocks of other work, one holding a single block only one block's. A popular prefix therefore spreads as
  soon as its holder is busier than computing the prefix again elsewhere costs. Ties go to the longer cached
  prefix (the blocks stay in one cache instead of being copied into another), then to the lower KV usage.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from goodput.policies.prefix_cache import PrefixCache

QUEUE: Final = "queue"
Route = int | Literal["queue"]
RoutingKind = Literal["random", "least_load", "prefix"]
KINDS: Final[tuple[RoutingKind, ...]] = ("random", "least_load", "prefix")
DEFAULT_OUTPUT_TOKENS: Final = 256  # the output budget assumed for ordering when a request sets none


class PrefixView(Protocol):
    def matched_blocks(self, blocks: Sequence[int]) -> int: ...


class _NoPrefix:
    """A replica about whose cache nothing is known."""

    def matched_blocks(self, blocks: Sequence[int]) -> int:
        return 0


NO_PREFIX: Final = _NoPrefix()


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What the router knows of one replica when a request arrives."""

    prefill_tokens: int  # prompt tokens routed here whose first token has not come back
    running: int
    waiting: int
    kv_usage: float  # fraction of the KV pool in use, 0..1
    prefix: PrefixView = NO_PREFIX


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    kind: RoutingKind = "prefix"
    max_requests: int = 256  # running + waiting at which a replica is at its bound (the tier's max batch)
    # in-flight prefill tokens at which a replica is at its bound; the operator derives it for each tier from the
    # TTFT target and the replica's prefill speed (policies/prefill_bound.py), this is the standalone default
    max_prefill_tokens: int = 65536
    max_kv_usage: float = 0.98  # KV usage at which a replica is at its bound: new prompts would preempt
    request_tokens: int = 256  # prefill-token equivalent of one running or waiting request
    block_tokens: int = 512  # tokens per prefix block

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("max_requests", "max_prefill_tokens", "block_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 < self.max_kv_usage <= 1.0:
            raise ValueError(f"max_kv_usage must be in (0, 1], got {self.max_kv_usage}")
        if self.request_tokens < 0:
            raise ValueError(f"request_tokens must be ≥ 0, got {self.request_tokens}")


def work(load: ReplicaLoad, policy: RoutingPolicy) -> int:
    """Outstanding work in prefill tokens."""
    return load.prefill_tokens + policy.request_tokens * (load.running + load.waiting)


def at_bound(load: ReplicaLoad, policy: RoutingPolicy) -> bool:
    return (
        load.running + load.waiting >= policy.max_requests
        or load.prefill_tokens >= policy.max_prefill_tokens
        or load.kv_usage >= policy.max_kv_usage
    )


def route(
    replicas: Sequence[ReplicaLoad],
    prompt_tokens: int,
    prefix_blocks: Sequence[int],
    policy: RoutingPolicy,
    draw: float = 0.0,
) -> Route:
    """The index of the replica that takes the request, or QUEUE when every replica is at its bound (or there
    are none). `draw` is a uniform number in [0, 1), used by the random policy only, so the function stays pure.
    """
    open_ = [i for i, load in enumerate(replicas) if not at_bound(load, policy)]
    if not open_:
        return QUEUE
    if policy.kind == "random":
        return open_[min(int(draw * len(open_)), len(open_) - 1)]
    works = {i: work(replicas[i], policy) for i in open_}
    if policy.kind == "least_load":
        return min(open_, key=lambda i: (works[i], replicas[i].kv_usage, i))
    hits = {i: replicas[i].prefix.matched_blocks(prefix_blocks) if prefix_blocks else 0 for i in open_}

    def predicted_ttft(i: int) -> tuple[int, int, float, int]:
        return works[i] + fresh_tokens(prompt_tokens, hits[i], policy), -hits[i], replicas[i].kv_usage, i

    return min(open_, key=predicted_ttft)


def queue_order(prompt_tokens: int, max_tokens: int | None) -> int:
    """A held request's place within its class: shortest first, by prompt plus output budget. SRPT-like, which
    minimises the mean wait; the router's bounded wait keeps long requests from starving."""
    return prompt_tokens + (max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS)


def fresh_tokens(prompt_tokens: int, hit_blocks: int, policy: RoutingPolicy) -> int:
    """Prompt tokens a replica must compute when it holds `hit_blocks` leading blocks of the prompt."""
    return max(prompt_tokens - hit_blocks * policy.block_tokens, 0)


class SimulatedRouting:
    """The routing decision as the trace-replay simulator applies it: each request's prefix blocks, a prefix
    cache per replica sized from its KV pool, and the hit counts for the report.

    In the simulation the router's estimate of a replica's cache is the cache itself (the router's estimate is
    what it sent there, which the replica keeps until evicted). When every replica is at its bound the simulator
    holds the request in its router queue, as the router does.

    `service=True` replays the same fleet without the router, as a Kubernetes Service spreads requests: each goes
    to a ready replica uniformly at random, whatever its load, and waits only when none is ready; the replicas'
    prefix caches still serve what lands on them. Only the policy's block size applies, so its kind must be
    "random".
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        blocks: Sequence[Sequence[int]],
        cache_blocks: int,
        seed: int = 0,
        service: bool = False,
    ) -> None:
        if service and policy.kind != "random":
            raise ValueError(
                f"a Service spreads requests at random: service=True needs kind 'random', got {policy.kind!r}"
            )
        self.policy, self.blocks, self.cache_blocks, self.service = policy, blocks, cache_blocks, service
        self._rng = random.Random(seed)
        self.hit_blocks = 0
        self.total_blocks = 0
        # prompt tokens looked up in the caches, and of those served from them, since `take_window`
        self._queried, self._served = 0, 0

    def new_cache(self) -> PrefixCache:
        return PrefixCache(self.cache_blocks)

    def choose(self, replicas: Sequence[ReplicaLoad], request: int, prompt_tokens: int) -> Route:
        draw = self._rng.random()
        if self.service:
            return int(draw * len(replicas)) if replicas else QUEUE
        return route(replicas, prompt_tokens, self.blocks[request], self.policy, draw)

    def prefill(self, cache: PrefixCache, request: int, prompt_tokens: int) -> int:
        """Tokens the replica must compute when it admits the request: the prompt less its cached prefix (at
        least one token: the last one is always computed for the first output token)."""
        blocks = self.blocks[request]
        hit = cache.insert(blocks)
        self.hit_blocks += hit
        self.total_blocks += len(blocks)
        computed = max(fresh_tokens(prompt_tokens, hit, self.policy), 1)
        self._queried += prompt_tokens
        self._served += prompt_tokens - computed
        return computed

    def take_window(self) -> tuple[int, int]:
        """Prompt tokens looked up in the replicas' caches and those served from them since the last call: the
        increases of the workers' `vllm:prefix_cache_queries` and `vllm:prefix_cache_hits` over a window."""
        window = self._queried, self._served
        self._queried, self._served = 0, 0
        return window

    @property
    def hit_rate(self) -> float:
        return self.hit_blocks / self.total_blocks if self.total_blocks else 0.0
