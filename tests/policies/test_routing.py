"""routing.route as tables of replica state → choice, and the prefix cache it reads."""

import numpy as np
import pytest

from goodput.policies.baselines import Static
from goodput.policies.prefix_cache import PrefixCache
from goodput.policies.routing import (
    DEFAULT_OUTPUT_TOKENS,
    QUEUE,
    ReplicaLoad,
    RoutingPolicy,
    SimulatedRouting,
    at_bound,
    queue_order,
    route,
)
from goodput.policies.simulator import Actuation, EngineConfig, SimConfig, SLOTarget, StepProfile, simulate
from goodput.policies.workloads import Trace


def cache_with(*prompts: list[int], capacity: int = 100) -> PrefixCache:
    cache = PrefixCache(capacity)
    for blocks in prompts:
        cache.insert(blocks)
    return cache


def load(prefill: int = 0, running: int = 0, waiting: int = 0, kv: float = 0.0, cache=None) -> ReplicaLoad:
    return ReplicaLoad(prefill, running, waiting, kv, cache if cache is not None else PrefixCache(0))


PREFIX = RoutingPolicy(kind="prefix", max_requests=8, max_prefill_tokens=10_000, request_tokens=100)
LEAST = RoutingPolicy(kind="least_load", max_requests=8, max_prefill_tokens=10_000, request_tokens=100)
RANDOM = RoutingPolicy(kind="random", max_requests=8, max_prefill_tokens=10_000)

HOT = cache_with([1, 2, 3])
LONG = cache_with(list(range(1, 21)))


@pytest.mark.parametrize(
    ("policy", "replicas", "prompt", "blocks", "expected"),
    [
        # least outstanding work: in-flight prefill tokens plus a token-equivalent per request
        (LEAST, [load(prefill=500), load(prefill=100)], 512, [], 1),
        (LEAST, [load(running=3), load(prefill=250)], 512, [], 1),
        (LEAST, [load(running=2), load(waiting=3)], 512, [], 0),
        # equal work: lower KV usage, then the lower index
        (LEAST, [load(kv=0.5), load(kv=0.2)], 512, [], 1),
        (LEAST, [load(), load()], 512, [], 0),
        # least_load ignores the prefix
        (LEAST, [load(prefill=100, cache=HOT), load()], 1536, [1, 2, 3], 1),
        # prefix: the least predicted time to first token, work + prompt tokens not cached there. The holder of
        # the whole 1536-token prompt wins while it is at most 1536 tokens busier than the least loaded replica
        (PREFIX, [load(), load(prefill=1000, cache=HOT)], 1536, [1, 2, 3], 1),
        (PREFIX, [load(prefill=2000), load(prefill=3500, cache=HOT)], 1536, [1, 2, 3], 1),
        # ...and loses beyond it: 1000 + 1536 < 3000 + 0
        (PREFIX, [load(prefill=1000), load(prefill=3000, cache=HOT)], 1536, [1, 2, 3], 0),
        # a short cached prefix of a long prompt is worth little queueing: 0 + 4096 < 3000 + 3584
        (PREFIX, [load(), load(prefill=3000, cache=cache_with([1]))], 4096, list(range(1, 9)), 0),
        # a long one is worth a long queue: 1000 + 10240 > 9000 + 0
        (PREFIX, [load(prefill=1000), load(prefill=9000, cache=LONG)], 10240, list(range(1, 21)), 1),
        # between holders, what is left to compute counts, not the longest prefix: 0 + 1024 < 2500 + 512
        (
            PREFIX,
            [load(cache=cache_with([1])), load(prefill=2500, cache=cache_with([1, 2]))],
            1536,
            [1, 2, 3],
            0,
        ),
        # the longest cached prefix wins among holders of equal predicted TTFT, and at equal work
        (PREFIX, [load(cache=cache_with([1])), load(cache=cache_with([1, 2]))], 1536, [1, 2, 3], 1),
        (
            PREFIX,
            [load(cache=cache_with([1])), load(prefill=512, cache=cache_with([1, 2]))],
            1536,
            [1, 2, 3],
            1,
        ),
        (PREFIX, [load(), load(prefill=512, cache=cache_with([1]))], 1024, [1, 2], 1),
        # only leading blocks count: block 3 alone, after a different head, is no hit
        (PREFIX, [load(prefill=50), load(prefill=100, cache=cache_with([9, 2, 3]))], 1536, [1, 2, 3], 0),
        # no holder: least work after placement
        (PREFIX, [load(prefill=300), load(prefill=200)], 1024, [7, 8], 1),
        # a request without blocks routes by load
        (PREFIX, [load(prefill=300, cache=HOT), load(prefill=200)], 1024, [], 1),
        # replicas at their bound are skipped: requests, prefill tokens, KV usage
        (LEAST, [load(running=5, waiting=3), load(prefill=900)], 512, [], 1),
        (PREFIX, [load(prefill=10_000, cache=HOT), load(prefill=5000)], 1536, [1, 2, 3], 1),
        (LEAST, [load(kv=0.98), load(prefill=2000)], 512, [], 1),
        # every replica at its bound, or none at all: the request queues
        (LEAST, [load(running=8), load(kv=0.99)], 512, [], QUEUE),
        (PREFIX, [load(prefill=10_000, cache=HOT)], 1536, [1, 2, 3], QUEUE),
        (PREFIX, [], 512, [1], QUEUE),
        (RANDOM, [], 512, [], QUEUE),
    ],
)
def test_route(policy, replicas, prompt, blocks, expected) -> None:
    assert route(replicas, prompt, blocks, policy) == expected


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0), (0.49, 0), (0.5, 2), (0.999, 2)])
def test_random_draws_uniformly_among_open_replicas(draw: float, expected: int) -> None:
    replicas = [load(), load(running=8), load()]
    assert route(replicas, 512, [], RANDOM, draw) == expected


def test_a_hot_prefix_spreads_once_its_holder_is_busier_than_computing_it_again() -> None:
    """Every request shares one 4-block prefix: it stays on its holder until the holder's backlog exceeds the
    prefix, then other replicas take (and cache) it, and the load stays within one prefix of balanced."""
    policy = RoutingPolicy(kind="prefix", max_requests=64, request_tokens=0)
    caches = [PrefixCache(100) for _ in range(3)]
    prefill = [0, 0, 0]
    blocks = [1, 2, 3, 4]
    for _ in range(30):
        replicas = [ReplicaLoad(prefill[i], 0, 0, 0.0, caches[i]) for i in range(3)]
        i = route(replicas, 2048 + 64, blocks, policy)
        assert isinstance(i, int)
        prefill[i] += 2048 + 64 - caches[i].insert(blocks) * 512  # the tokens after the prefix: never cached
    assert all(p > 0 for p in prefill), prefill
    assert max(prefill) - min(prefill) <= 2048 + 64, prefill


def test_at_bound() -> None:
    assert not at_bound(load(running=7), LEAST)
    assert at_bound(load(running=4, waiting=4), LEAST)
    assert at_bound(load(prefill=10_000), LEAST)
    assert at_bound(load(kv=0.98), LEAST)


@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", "round_robin"), ("max_requests", 0), ("max_kv_usage", 1.5), ("request_tokens", -1)],
)
def test_policy_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RoutingPolicy(**{field: value})


def test_prefix_cache_keeps_long_prompts_and_the_head_of_recent_ones() -> None:
    cache = PrefixCache(4)
    assert cache.insert([1, 2, 3]) == 0
    assert cache.insert([1, 2, 5]) == 2
    assert cache.matched_blocks([1, 2, 3]) == 3  # four blocks fit
    assert len(cache) == 4
    cache.insert([7, 8])  # worth 2, the others 3: the short prompt goes, its tail first
    assert len(cache) == 4
    assert cache.matched_blocks([7, 8]) == 0
    assert cache.matched_blocks([1, 2, 3]) == 3
    cache.insert([9])  # the clock rose to 2: worth 3, a tie the least recent tail loses
    assert cache.matched_blocks([1, 2, 3]) == 2
    assert cache.matched_blocks([1, 2, 5]) == 3
    assert cache.matched_blocks([9]) == 1
    cache.clear()
    assert cache.matched_blocks([9]) == 0


def test_prefix_cache_rejects_negative_capacity() -> None:
    with pytest.raises(ValueError, match="capacity_blocks"):
        PrefixCache(-1)


# --- the simulator routing through the same decision -------------------------------------------------------

SIM_PROFILE = StepProfile(
    weights_s=0.010,
    kv_s_per_token=0.0,
    compute_s_per_token=0.0002,
    overhead_s=0.0,
    kv_capacity_tokens=200_000,
)


def _conversations(n: int = 600, sessions: int = 24, seed: int = 0) -> tuple[Trace, list[list[int]]]:
    """Sessions whose turns share a 6-block history; each turn adds one block of its own."""
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, 120, n))
    session = rng.integers(0, sessions, n)
    blocks = [[1000 * int(s) + b for b in range(6)] + [10**6 + i] for i, s in enumerate(session)]
    trace = Trace("conv", arrivals, np.full(n, 7 * 512), np.full(n, 20))
    return trace, blocks


def _routed_fleet(kind: str, blocks: list[list[int]]) -> tuple[SimulatedRouting, SimConfig]:
    """Four replicas routed by `kind`, each with a prefix cache of 60 blocks."""
    routing = SimulatedRouting(RoutingPolicy(kind=kind, max_requests=16), blocks, cache_blocks=60)
    cfg = SimConfig(
        profile=SIM_PROFILE,
        engine=EngineConfig(max_batch=16, batch_window_s=0.0, chunk_tokens=4096),
        slo=SLOTarget(ttft_ms=500, tpot_ms=50),
        initial_replicas=4,
        routing=routing,
    )
    return routing, cfg


def _simulate(kind: str, trace: Trace, blocks: list[list[int]]) -> tuple[float, float]:
    routing, cfg = _routed_fleet(kind, blocks)
    result = simulate(trace, Static(4), cfg)
    return routing.hit_rate, result.ttft_p95_ms


def test_simulator_prefix_routing_hits_more_and_answers_sooner() -> None:
    trace, blocks = _conversations()
    random_hits, random_ttft = _simulate("random", trace, blocks)
    prefix_hits, prefix_ttft = _simulate("prefix", trace, blocks)
    least_hits, _ = _simulate("least_load", trace, blocks)
    # 24 sessions of 6 blocks do not fit one replica's 60 blocks; routed by prefix, each replica keeps its own
    assert prefix_hits > 1.5 * random_hits
    assert prefix_hits > least_hits
    assert prefix_ttft < random_ttft


def test_simulated_routing_counts_the_prefix_caches_tokens_per_window() -> None:
    """The workers' counters in tokens: looked up (the prompt) and held (its cached blocks, never its last token)."""
    routing = SimulatedRouting(RoutingPolicy(block_tokens=512), [[1, 2], [1, 2], [1, 2, 3]], cache_blocks=10)
    cache = routing.new_cache()
    assert routing.prefill(cache, 0, 1024) == 1024
    assert routing.prefill(cache, 1, 1024) == 1  # all cached but the token that yields the first output
    assert routing.take_window() == (2048, 1023)
    assert routing.prefill(cache, 2, 1300) == 276
    assert routing.take_window() == (1300, 1024)
    assert routing.take_window() == (0, 0)


def test_the_simulator_observes_the_prefix_caches_share() -> None:
    trace, blocks = _conversations()
    _, cfg = _routed_fleet("prefix", blocks)
    seen: list[float | None] = []

    class Recorder(Static):
        def decide(self, now, obs, fleet):  # type: ignore[no-untyped-def]
            seen.append(obs.prefix_cache_hit_fraction)
            return super().decide(now, obs, fleet)

    simulate(trace, Recorder(4), cfg)
    shares = [s for s in seen if s is not None]
    assert len(shares) >= len(seen) - 1 and all(0.0 <= s <= 1.0 for s in shares)
    # six of a turn's seven blocks are its session's history: most are cached once the caches are warm
    assert np.mean(shares[2:]) > 0.5


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "expected"),
    [(1000, None, 1000 + DEFAULT_OUTPUT_TOKENS), (100, 2000, 2100), (100, 0, 100)],
)
def test_queue_order_is_prompt_plus_output_budget(prompt: int, max_tokens: int | None, expected: int) -> None:
    assert queue_order(prompt, max_tokens) == expected


# --- the simulator's router queue ------------------------------------------------------------------------

ONE_AT_A_TIME = RoutingPolicy(kind="least_load", max_requests=1)


def _held_fleet(outputs: list[int], start_delay_s: float = 90.0, service: bool = False) -> SimConfig:
    """Replicas that take one request at a time (a bound of one) behind the simulated router, or behind a
    Service (`service`), which knows no bound; 10 ms decode steps."""
    policy = RoutingPolicy(kind="random", max_requests=1) if service else ONE_AT_A_TIME
    return SimConfig(
        profile=SIM_PROFILE,
        engine=EngineConfig(max_batch=8, batch_window_s=0.0, chunk_tokens=4096),
        slo=SLOTarget(ttft_ms=1000, tpot_ms=50),
        start_delay_s=start_delay_s,
        initial_replicas=2,
        routing=SimulatedRouting(policy, [[] for _ in outputs], cache_blocks=10, service=service),
    )


def test_the_simulated_router_holds_a_request_until_a_replica_is_below_its_bound() -> None:
    """Two replicas, one long and one short request, then a third: it waits in the router, not behind the long
    one, and starts on the replica the short one frees."""
    outputs = [3000, 20, 20]
    trace = Trace("held", np.array([0.0, 0.001, 0.002]), np.full(3, 100), np.array(outputs))
    result = simulate(trace, Static(2), _held_fleet(outputs))
    first_token = trace.arrival_s + result.ttft_ms / 1000.0
    finish = first_token + result.tpot_ms * (trace.output_tokens - 1) / 1000.0
    assert first_token[2] >= finish[1]  # held while both replicas were at their bound
    assert first_token[2] < 1.0 < finish[0]  # and not queued behind the long request


def test_behind_a_service_nothing_waits_for_a_bound() -> None:
    outputs = [3000, 20, 20]
    trace = Trace("spread", np.array([0.0, 0.001, 0.002]), np.full(3, 100), np.array(outputs))
    result = simulate(trace, Static(2), _held_fleet(outputs, service=True))
    assert (result.ttft_ms < 100).all()  # each went to a replica at once and joined its batch
    with pytest.raises(ValueError, match="service=True needs kind 'random'"):
        SimulatedRouting(ONE_AT_A_TIME, [[]], cache_blocks=10, service=True)


def test_the_simulated_router_reports_what_it_holds_and_a_new_replica_takes_it() -> None:
    """Ten long requests at once on two replicas of one request each: the router holds eight, says so in the
    first window, and the replica added then takes the head of its queue as soon as it is ready."""
    n = 10  # and a last one at 100 s, so that the controller is asked while the burst is served
    trace = Trace(
        "burst", np.r_[np.linspace(0.0, 0.01, n), 100.0], np.full(n + 1, 100), np.r_[np.full(n, 3000), 5]
    )
    held: list[float | None] = []

    class GrowOnce(Static):
        def decide(self, now, obs, fleet):  # type: ignore[no-untyped-def]
            held.append(obs.router_queued)
            return Actuation(replicas=3)

    cfg = _held_fleet([3000] * n + [5], start_delay_s=5.0)
    result = simulate(trace, GrowOnce(2), cfg)
    assert held[0] == n - 2
    first_token = trace.arrival_s + result.ttft_ms / 1000.0
    ready_at = cfg.interval_s + cfg.start_delay_s
    # the third request (the head of the queue) starts on the new replica, long before a first one finishes (30 s)
    assert ready_at <= first_token[2] < ready_at + 1.0
    assert np.isfinite(result.ttft_ms).all()


def _first_window_ttfts(outputs: list[int]) -> tuple[float, float]:
    """The workers' and the clients' TTFT p95 in the first window of `_held_fleet` serving requests of these
    outputs (100-token prompts) that arrive a millisecond apart, and one more at 100 s."""
    n = len(outputs)
    arrivals = np.r_[np.arange(n) * 0.001, 100.0]
    trace = Trace("held", arrivals, np.full(n + 1, 100), np.r_[outputs, 5])
    seen: list[tuple[float | None, float | None]] = []

    class Watch(Static):
        def decide(self, now, obs, fleet):  # type: ignore[no-untyped-def]
            seen.append((obs.ttft_p95_ms, obs.client_ttft_p95_ms))
            return Actuation(replicas=2)

    simulate(trace, Watch(2), _held_fleet([*outputs, 5]))
    workers, clients = seen[0]
    assert workers is not None and clients is not None
    return workers, clients


def test_the_simulated_router_shows_requests_waiting_past_the_target_before_they_are_served() -> None:
    """Two replicas busy with long requests and three more held behind them: in the first window every first
    token served was fast, but the held requests have waited past the 1 s target, and the TTFT clients see says
    so then, not only once they are served."""
    workers, clients = _first_window_ttfts([3000, 3000, 20, 20, 20])
    assert workers < 1000.0 < clients  # the two first tokens came at once; the three held wait 15 s


def test_behind_the_simulated_router_the_workers_ttft_starts_when_it_sends_the_request() -> None:
    """As on the real stack: the third request waits about 3 s in the router for a free replica; the workers time
    its first token from when they got it, the router from its arrival."""
    workers, clients = _first_window_ttfts([300, 300, 5])
    assert workers < 500.0 and clients > 2000.0
