"""Trace-replay simulator: a fleet of continuous-batching replicas under a control loop.

Each replica runs vLLM-style steps: every running request decodes one token, admitted prompts are prefilled in
chunks within a per-step token budget, and the step takes the time the performance model gives for that mix.
Steps in which only decodes run are fast-forwarded in closed form, and the step loop is compiled
(`policies/engine_core.py`), so a replica's hour of traffic takes a fraction of a second.
Requests reach ready replicas at random, as a Kubernetes Service spreads them (or, with `SimConfig.routing`,
where `policies.routing` sends them from the replicas' state, with a prefix cache per replica, after waiting in
the router's queue while every replica is at its bound); pods become ready a start delay after they are created
and are billed from creation until they have drained. Every control interval the simulator fills vLLM-bucket
histograms, builds the Observation through `policies.observe` exactly as the operator does from Prometheus, and
asks the controller (goodput's `autoscale` or a baseline) for replicas.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from goodput.policies import engine_core as core
from goodput.policies.observe import (
    DEFAULT_WINDOW_S,
    ITL_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    TierWindow,
    build_observation,
    over_time,
)
from goodput.policies.perfmodel import (
    ATTENTION,
    COST_TERMS,
    DECODE_COMPUTE,
    DECODE_SERIAL,
    KV_TOKEN,
    OVERHEAD,
    PREFILL_COMPUTE,
    PREFILL_SERIAL,
    WEIGHTS,
    StepModel,
)
from goodput.policies.prefix_cache import PrefixCache
from goodput.policies.routing import NO_PREFIX, QUEUE, ReplicaLoad, SimulatedRouting, queue_order
from goodput.policies.sim_result import SimResult, Timeline
from goodput.policies.types import Observation
from goodput.policies.workloads import Trace

# how often the simulated router looks for freed capacity while it holds requests: about one decode step
DISPATCH_TICK_S = 0.02


@dataclass(frozen=True)
class StepProfile:
    """One replica's step costs: the coefficients of the performance model's step formula
    (`policies.perfmodel.step_seconds`), which the compiled engine loop evaluates step by step.

    step = overhead + serial work + max(weights + kv·tokens, compute·tokens + attention·context): memory-bound
    decode, compute-bound prefill, each prefill chunk's attention at its own context.
    """

    weights_s: float  # streaming the weights once (per GPU shard)
    kv_s_per_token: float  # reading (decode) or writing (prefill) one token's K and V
    compute_s_per_token: float  # matmul time of one decoded token through the model
    overhead_s: float  # scheduling, sampling, launches, all-reduce latency
    kv_capacity_tokens: int
    # host-bound engines (the CPU worker) and all-reduces add costs that overlap nothing: per decoding sequence,
    # per prefill token
    decode_s_per_seq: float = 0.0
    prefill_s_per_token: float = 0.0
    # matmul time of one prompt token; None: a decoded token's
    prefill_compute_s_per_token: float | None = None
    attention_s_per_context: float = 0.0  # attention compute per (token, context token) pair

    @property
    def cost(self) -> np.ndarray:
        """The coefficient vector `step_seconds` reads."""
        cost = np.zeros(COST_TERMS)
        prefill = (
            self.compute_s_per_token
            if self.prefill_compute_s_per_token is None
            else self.prefill_compute_s_per_token
        )
        cost[[OVERHEAD, DECODE_SERIAL, PREFILL_SERIAL, WEIGHTS, KV_TOKEN, DECODE_COMPUTE, PREFILL_COMPUTE, ATTENTION]] = (
            self.overhead_s, self.decode_s_per_seq, self.prefill_s_per_token, self.weights_s, self.kv_s_per_token,
            self.compute_s_per_token, prefill, self.attention_s_per_context,
        )  # fmt: skip
        return cost

    @classmethod
    def from_model(cls, model: StepModel, max_batch: int = 256, chunk_tokens: int = 8192) -> StepProfile:
        """The performance model's own coefficients (its calibration factors are the simulator's truth: 1)."""
        cost = model.cost
        return cls(
            weights_s=float(cost[WEIGHTS]),
            kv_s_per_token=float(cost[KV_TOKEN]),
            compute_s_per_token=float(cost[DECODE_COMPUTE]),
            overhead_s=float(cost[OVERHEAD]),
            kv_capacity_tokens=int(model.kv_capacity_tokens(max_batch, chunk_tokens)),
            decode_s_per_seq=float(cost[DECODE_SERIAL]),
            prefill_s_per_token=float(cost[PREFILL_SERIAL]),
            prefill_compute_s_per_token=float(cost[PREFILL_COMPUTE]),
            attention_s_per_context=float(cost[ATTENTION]),
        )


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 256
    batch_window_s: float = 0.003
    chunk_tokens: int = 8192


@dataclass(frozen=True)
class SLOTarget:
    ttft_ms: float
    tpot_ms: float
    attainment: float = 0.99


@dataclass(frozen=True)
class FleetView:
    """What a controller may know about the fleet besides metrics: as the Deployment's status shows it."""

    desired: int
    ready: int
    starting: int


@dataclass(frozen=True)
class Actuation:
    replicas: int
    engine: EngineConfig | None = None  # None keeps the engine settings


class Controller(Protocol):
    name: str

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation: ...


class _Replica:
    """One worker pod: its queue of routed requests and its running batch, as `policies.engine_core` arrays."""

    __slots__ = ("cache", "created", "done_at", "draining", "queue", "ready_at", "run", "st", "t")

    def __init__(self, created: float, ready_at: float, cache: PrefixCache | None = None) -> None:
        self.created = created
        self.ready_at = ready_at
        self.t = ready_at  # the replica's own clock: the end of its last step
        self.draining = False
        self.done_at: float | None = None
        self.queue = np.zeros(64, dtype=np.int64)  # routed request ids: waiting, then not yet arrived
        self.st = np.zeros(5, dtype=np.int64)  # queue indices, running sequences, KV tokens held
        self.run = np.zeros((0, 5), dtype=np.int64)  # one row per running sequence
        self.cache = cache  # prefix blocks it holds, when the simulation routes by state

    def route(self, rids: np.ndarray) -> None:
        """Append requests to the queue (they arrive at the replica's clock by their arrival time)."""
        tail = int(self.st[core.TAIL])
        if tail + len(rids) > len(self.queue):
            grown = np.zeros(max(2 * len(self.queue), tail + len(rids)), dtype=np.int64)
            grown[:tail] = self.queue[:tail]
            self.queue = grown
        self.queue[tail : tail + len(rids)] = rids
        self.st[core.TAIL] = tail + len(rids)

    def drop_routed(self) -> None:
        """Forget the requests that have not arrived yet (the pod is deleted before it served them)."""
        self.st[core.TAIL] = self.st[core.PULLED]

    @property
    def running(self) -> int:
        return int(self.st[core.N_RUN])

    @property
    def queued(self) -> int:
        return int(self.st[core.TAIL] - self.st[core.HEAD])

    @property
    def kv_used(self) -> int:
        return int(self.st[core.KV_USED])

    def waiting_at(self, t: float, arrival: np.ndarray) -> int:
        """Requests queued at this replica that have arrived by `t` (waiting or not yet pulled)."""
        head, pulled, tail = (int(x) for x in self.st[: core.TAIL + 1])
        return pulled - head + int(np.count_nonzero(arrival[self.queue[pulled:tail]] <= t))

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.queued == 0


@dataclass
class _Records:
    """Per-request outcomes and this interval's raw metric samples (filled in place by the compiled loop)."""

    first_token: np.ndarray
    finish: np.ndarray
    # when a replica took each request: its arrival, or behind the router the moment the router sent it (the
    # workers' TTFT starts there, the clients' at arrival)
    dispatched: np.ndarray
    first_log: np.ndarray  # request ids in the order of their first token
    fin_log: np.ndarray  # request ids in the order they finished
    cursor: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # entries in the logs
    observed: tuple[int, int] = (0, 0)  # log entries an observation has already taken
    carried_first: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )  # for a later window
    carried_fin: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    itl_edges: np.ndarray = field(
        default_factory=lambda: np.append(np.asarray(ITL_BUCKETS, dtype=float), math.inf)
    )
    itl_weights: np.ndarray = field(default_factory=lambda: np.zeros(len(ITL_BUCKETS) + 1))
    # the intervals' windows an observation covers, newest last (simulate bounds it to the range's intervals)
    recent: deque[TierWindow] = field(default_factory=deque)


class _Engine:
    """Steps replicas forward in time through the compiled loop; shared by every replica of one simulation."""

    def __init__(self, trace: Trace, profile: StepProfile, config: EngineConfig, records: _Records) -> None:
        self.arrival = np.ascontiguousarray(trace.arrival_s, dtype=float)
        self.prompt = np.ascontiguousarray(trace.prompt_tokens, dtype=np.int64)
        self.prefill = self.prompt.copy()  # tokens to compute at admission: less a cached prefix when routed
        self.output = np.ascontiguousarray(trace.output_tokens, dtype=np.int64)
        self.prof = np.append(profile.cost, float(profile.kv_capacity_tokens))
        self.config = config
        self.rec = records

    def advance(self, r: _Replica, t_end: float) -> None:
        """Run replica `r` until its clock reaches t_end (its last step may end a little later)."""
        cfg, rec = self.config, self.rec
        if len(r.run) < max(cfg.max_batch, r.running):
            grown = np.zeros((max(cfg.max_batch, r.running), 5), dtype=np.int64)
            grown[: len(r.run)] = r.run
            r.run = grown
        knobs = np.array([float(cfg.max_batch), cfg.batch_window_s, float(cfg.chunk_tokens)])
        r.t = core.advance(
            r.t, t_end, r.st, r.queue, r.run, self.arrival, self.prompt, self.prefill, self.output, self.prof, knobs,
            rec.first_token, rec.finish, rec.first_log, rec.fin_log, rec.cursor, rec.itl_edges, rec.itl_weights,
        )  # fmt: skip


@dataclass(frozen=True)
class SimConfig:
    profile: StepProfile
    engine: EngineConfig
    slo: SLOTarget
    gpus_per_replica: int = 1
    price_per_gpu_hour: float = 4.0
    start_delay_s: float = 90.0
    interval_s: float = 15.0
    # the range each observation covers, as the operator's PromQL reads it: the last window_s / interval_s
    # intervals (fewer at the start)
    window_s: float = DEFAULT_WINDOW_S
    initial_replicas: int = 1
    seed: int = 0
    routing: SimulatedRouting | None = None  # None: uniformly at random, as a Kubernetes Service spreads

    def __post_init__(self) -> None:
        if self.window_s < self.interval_s:
            raise ValueError(
                f"window_s ({self.window_s:g} s) must be at least interval_s ({self.interval_s:g} s): the "
                "operator refuses a range shorter than its interval, which would miss what happens between reads"
            )


def simulate(trace: Trace, controller: Controller, cfg: SimConfig, setting: str = "") -> SimResult:
    """Replay `trace` under `controller`; bill GPUs up to the trace end, then let in-flight requests finish."""
    n = len(trace)
    rng = np.random.default_rng(cfg.seed)
    rec = _Records(
        first_token=np.full(n, np.nan),
        dispatched=np.array(trace.arrival_s, dtype=float),
        finish=np.full(n, np.nan),
        first_log=np.zeros(n, dtype=np.int64),
        fin_log=np.zeros(n, dtype=np.int64),
        recent=deque(maxlen=max(round(cfg.window_s / cfg.interval_s), 1)),
    )
    engine = _Engine(trace, cfg.profile, cfg.engine, rec)
    new_cache = cfg.routing.new_cache if cfg.routing is not None else lambda: None
    horizon = trace.duration_s
    # warm at t=0
    pods = [_Replica(-cfg.start_delay_s, 0.0, new_cache()) for _ in range(cfg.initial_replicas)]
    retired: list[_Replica] = []
    pending: deque[int] = deque()  # arrived while no replica was ready (the Service had no endpoints)
    held: list[tuple[int, int]] = []  # the router's queue, when one is simulated: (queue order, request id)
    desired, events = cfg.initial_replicas, 0
    arrival = trace.arrival_s
    log: dict[str, list[float]] = {k: [] for k in ("time", "rps", "ready", "desired", "ttft", "tpot")}
    t0, nxt = 0.0, 0
    while True:
        t1 = t0 + cfg.interval_s
        live = sorted((r for r in pods if not r.draining), key=lambda r: r.ready_at)
        stop = int(np.searchsorted(arrival, t1, side="left"))
        routed = np.arange(nxt, stop)
        if cfg.routing is not None:  # where the router sends it, from the replicas' state, or into its queue
            _serve_routed(engine, cfg.routing, live, held, routed, t0, t1)
        else:
            ready_at = np.array([r.ready_at for r in live])
            if pending and (ready_at <= t0).any():
                routed = np.r_[np.asarray(pending, dtype=int), routed]
                pending.clear()
            # each request goes to a random replica among those ready when it arrives
            eligible = np.searchsorted(ready_at, np.maximum(arrival[routed], t0), side="right")
            pick = (rng.random(len(routed)) * eligible).astype(int)
            pending.extend(routed[eligible == 0].tolist())
            served = eligible > 0
            by_replica = np.argsort(pick[served], kind="stable")  # each replica's share, in arrival order
            rids, picks = routed[served][by_replica], pick[served][by_replica]
            bounds = np.searchsorted(picks, np.arange(len(live) + 1))
            for k, r in enumerate(live):
                if bounds[k + 1] > bounds[k]:
                    r.route(rids[bounds[k] : bounds[k + 1]])
        nxt = stop
        for r in pods:
            engine.advance(r, t1)
        for r in [r for r in pods if r.draining and r.idle]:
            r.done_at = max(r.t, t0)
            pods.remove(r)
            retired.append(r)
        unrouted = [rid for _, rid in held] if cfg.routing is not None else list(pending)
        obs = _observe(t1, cfg, trace, rec, pods, np.asarray(unrouted, dtype=np.int64))
        live = [r for r in pods if not r.draining]
        ready = sum(r.ready_at <= t1 for r in live)
        log["time"].append(t1)
        log["rps"].append(float(np.sum((arrival >= t0) & (arrival < t1))) / cfg.interval_s)
        log["ready"].append(ready)
        log["desired"].append(desired)
        log["ttft"].append(np.nan if obs.ttft_p95_ms is None else obs.ttft_p95_ms)
        log["tpot"].append(np.nan if obs.tpot_p95_ms is None else obs.tpot_p95_ms)
        finished_all = nxt >= n and not pending and not held and all(r.idle for r in pods)
        if t1 >= horizon and (finished_all or t1 > horizon + 3600):
            break
        if t1 < horizon:
            act = controller.decide(t1, obs, FleetView(desired, ready, len(live) - ready))
            if act.engine is not None:
                engine.config = act.engine
            target = max(act.replicas, 0)
            if target != desired:
                events += 1
                _resize(pods, live, target, t1, cfg.start_delay_s, new_cache)
                desired = target
        t0 = t1
    for r in pods:
        r.done_at = max(r.t, horizon)
    end = {id(r): min(r.done_at or horizon, horizon) for r in pods + retired}
    gpu_s = sum(max(end[id(r)] - max(r.created, -cfg.start_delay_s), 0.0) for r in pods + retired)
    gpu_hours = gpu_s * cfg.gpus_per_replica / 3600.0
    return _result(controller.name, setting, trace, rec, cfg, gpu_hours, events, log)


def _serve_routed(
    engine: _Engine,
    routing: SimulatedRouting,
    live: list[_Replica],
    held: list[tuple[int, int]],
    rids: np.ndarray,
    t0: float,
    t1: float,
) -> None:
    """Route the window's arrivals as the router does (`router.dispatch`): while it holds nothing, a request goes
    where the routing policy sends it from the replicas' state at its arrival; when every replica is at its bound,
    it waits in the router's queue, whose head is routed again whenever capacity may have freed. The router
    looks again at each first token and finish; the simulation looks at each arrival, as a replica becomes
    ready, and every `DISPATCH_TICK_S` while it holds requests. `live` is ordered by readiness. Without the router
    (`SimulatedRouting.service`) nothing is at a bound, so requests wait only while no replica is ready.
    """
    arrival, prompt = engine.arrival, engine.prompt
    readies = [r.ready_at for r in live if t0 < r.ready_at < t1]
    t, i = t0, 0
    while True:
        if held:
            _pump(engine, routing, [r for r in live if r.ready_at <= t], held, t)
        t = min(
            float(arrival[rids[i]]) if i < len(rids) else math.inf,
            min((ready for ready in readies if ready > t), default=math.inf),
            t + DISPATCH_TICK_S if held else math.inf,
        )
        if t >= t1:
            return
        while i < len(rids) and arrival[rids[i]] <= t:
            rid = int(rids[i])
            heapq.heappush(held, (queue_order(int(prompt[rid]), None), rid))
            i += 1


def _pump(
    engine: _Engine, routing: SimulatedRouting, ready: list[_Replica], held: list[tuple[int, int]], now: float
) -> None:
    """Route the head of the router's queue while a replica takes it. The chosen replica's prefix cache takes the
    request's blocks as it is routed (the router's estimate of a replica's cache is what it sent there), and the
    request will prefill only the uncached part."""
    for r in ready:
        engine.advance(r, now)
    loads = [_load(engine, r) for r in ready]
    while held:
        rid = held[0][1]
        choice = routing.choose(loads, rid, int(engine.prompt[rid]))
        if choice == QUEUE:
            return
        heapq.heappop(held)
        chosen = ready[choice]
        if not routing.service:
            engine.rec.dispatched[rid] = now
        if chosen.cache is not None:
            engine.prefill[rid] = routing.prefill(chosen.cache, rid, int(engine.prompt[rid]))
        chosen.route(np.array([rid], dtype=np.int64))
        loads[choice] = _load(engine, chosen)


def _load(engine: _Engine, r: _Replica) -> ReplicaLoad:
    """What the router knows of a replica; its prefill in flight is the uncached prompt tokens it was sent."""
    head, tail, n_run = int(r.st[core.HEAD]), int(r.st[core.TAIL]), r.running
    return ReplicaLoad(
        prefill_tokens=int(r.run[:n_run, core.PREFILL_LEFT].sum())
        + int(engine.prefill[r.queue[head:tail]].sum()),
        running=n_run,
        waiting=tail - head,
        kv_usage=r.kv_used / engine.prof[core.KV_CAPACITY],
        prefix=r.cache if r.cache is not None else NO_PREFIX,
    )


def _resize(
    pods: list[_Replica],
    live: list[_Replica],
    target: int,
    now: float,
    delay: float,
    new_cache: Callable[[], PrefixCache | None],
) -> None:
    """Scale the Deployment: new pods start now; removals take not-ready pods first, then the least loaded."""
    if target > len(live):
        pods.extend(_Replica(now, now + delay, new_cache()) for _ in range(target - len(live)))
        return
    victims = sorted(live, key=lambda r: (r.ready_at <= now, r.running + r.queued))
    for r in victims[: len(live) - target]:
        r.draining = True
        if r.ready_at > now:  # never became ready: deleted at once, nothing to drain
            r.drop_routed()
            r.t = now


def _observe(
    t1: float, cfg: SimConfig, trace: Trace, rec: _Records, pods: list[_Replica], unrouted: np.ndarray
) -> Observation:
    """This interval's histograms and gauges, through the same code path the operator's Prometheus reader uses.

    Latency histograms count what completed in the window (TTFT at the first token, inter-token gaps per
    step, token counts at finish); gauges are sampled at the window's end, as a scrape would. With a router, the
    workers' TTFT starts when it sent the request and its own at arrival; the requests it holds (no replica is
    ready, or every one is at its bound) are its queue depth, as the operator reads it, and their waits so far
    its queue-age gauge histogram; the prefix caches' counters are the prompt tokens routed in the window and
    those their replica held. Without one, requests that arrived while no replica was ready count among the
    workers' waiting (no endpoint took them yet).
    """
    seen_first, seen_fin = rec.observed
    first, rec.carried_first = _events_until(
        rec.first_log, rec.first_token, rec.carried_first, seen_first, int(rec.cursor[0]), t1
    )
    fin, rec.carried_fin = _events_until(
        rec.fin_log, rec.finish, rec.carried_fin, seen_fin, int(rec.cursor[1]), t1
    )
    rec.observed = (int(rec.cursor[0]), int(rec.cursor[1]))
    window, cap = cfg.interval_s, cfg.profile.kv_capacity_tokens
    serving = [r for r in pods if r.ready_at <= t1]
    ready = [r for r in serving if not r.draining]
    waiting = sum(r.waiting_at(t1, trace.arrival_s) for r in serving)
    queried, served = cfg.routing.take_window() if cfg.routing is not None else (None, None)
    router = cfg.routing is not None and not cfg.routing.service
    window_data = TierWindow(
        ttft=Histogram.from_samples(TTFT_BUCKETS, rec.first_token[first] - rec.dispatched[first]),
        itl=Histogram(rec.itl_edges.copy(), np.cumsum(rec.itl_weights)),
        prompt_tokens=Histogram.from_samples(TOKEN_BUCKETS, trace.prompt_tokens[fin]),
        output_tokens=Histogram.from_samples(TOKEN_BUCKETS, trace.output_tokens[fin]),
        requests=float(len(fin)),
        running=float(sum(r.running for r in serving)),
        waiting=float(waiting if router else waiting + len(unrouted)),
        router_queued=float(len(unrouted)) if router else None,
        router_ttft=Histogram.from_samples(TTFT_BUCKETS, rec.first_token[first] - trace.arrival_s[first])
        if router
        else None,
        router_queue_age=Histogram.from_samples(TTFT_BUCKETS, t1 - trace.arrival_s[unrouted])
        if router
        else None,
        kv_cache_usage=float(np.mean([r.kv_used / cap for r in ready])) if ready else None,
        ready_replicas=len(ready),
        prefix_cache_queries=queried,
        prefix_cache_hits=served,
    )
    rec.itl_weights[:] = 0.0
    rec.recent.append(window_data)
    obs = build_observation(
        t1,
        window * len(rec.recent),
        {"interactive": over_time(rec.recent)},
        ttft_target_s=cfg.slo.ttft_ms / 1000.0,
    )
    assert obs is not None  # the window always carries series
    return obs


def _events_until(
    log: np.ndarray, when: np.ndarray, carried: np.ndarray, seen: int, end: int, t1: float
) -> tuple[np.ndarray, np.ndarray]:
    """Request ids whose event (first token, finish) happened by t1, and those to count in a later window.

    An engine step may end after the window's end: its events belong to the next window, so they are carried.
    """
    fresh = np.concatenate((carried, log[seen:end]))
    due = when[fresh] <= t1
    return fresh[due], fresh[~due]


def _result(
    policy: str,
    setting: str,
    trace: Trace,
    rec: _Records,
    cfg: SimConfig,
    gpu_hours: float,
    events: int,
    log: dict[str, list[float]],
) -> SimResult:
    ttft_ms = (rec.first_token - trace.arrival_s) * 1000.0
    decode_tokens = np.maximum(trace.output_tokens - 1, 1)
    tpot_ms = np.where(trace.output_tokens > 1, (rec.finish - rec.first_token) * 1000.0 / decode_tokens, 0.0)
    done = np.isfinite(rec.finish)
    ok = done & (ttft_ms <= cfg.slo.ttft_ms) & (tpot_ms <= cfg.slo.tpot_ms)
    worst = np.inf
    return SimResult(
        policy=policy,
        setting=setting,
        attainment=float(ok.mean()) if len(ok) else 1.0,
        ttft_p95_ms=float(np.percentile(np.where(done, ttft_ms, worst), 95)) if len(ok) else 0.0,
        tpot_p95_ms=float(np.percentile(np.where(done, tpot_ms, worst), 95)) if len(ok) else 0.0,
        gpu_hours=gpu_hours,
        cost=gpu_hours * cfg.price_per_gpu_hour,
        scale_events=events,
        requests=len(ok),
        ok=ok,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        output_tokens=int(trace.output_tokens[done].sum()),
        timeline=Timeline(
            time=np.asarray(log["time"]),
            rps=np.asarray(log["rps"]),
            ready=np.asarray(log["ready"]),
            desired=np.asarray(log["desired"]),
            ttft_p95_ms=np.asarray(log["ttft"]),
            tpot_p95_ms=np.asarray(log["tpot"]),
        ),
    )
