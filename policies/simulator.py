"""Trace-replay simulator: a fleet of continuous-batching replicas under a control loop.

Each replica runs vLLM-style steps: every running request decodes one token, admitted prompts are prefilled in
chunks within a per-step token budget, and the step takes the time the performance model gives for that mix.
Steps in which only decodes run are fast-forwarded in closed form, so an hour of traffic takes about a second.
Requests reach ready replicas at random, as a Kubernetes Service spreads them (or, with `SimConfig.routing`,
where `policies.routing` sends them from the replicas' state at arrival, with a prefix cache per replica); pods
become ready a start delay after they are created and are billed from creation until they have drained. Every control interval the
simulator fills vLLM-bucket histograms, builds the Observation through `policies.observe` exactly as the
operator does from Prometheus, and asks the controller (goodput's `autoscale` or a baseline) for replicas.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from policies.observe import (
    ITL_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    TierWindow,
    build_observation,
)
from policies.perfmodel import StepModel
from policies.prefix_cache import PrefixCache
from policies.routing import ReplicaLoad, SimulatedRouting
from policies.types import Observation
from policies.workloads import Trace


@dataclass(frozen=True)
class StepProfile:
    """One replica's step time as a roofline: the perf model's figures for one accelerator, TP and model.

    step = overhead + max(weights + kv·context, compute·tokens): memory-bound decode, compute-bound prefill.
    """

    weights_s: float  # streaming the weights once (per GPU shard)
    kv_s_per_token: float  # reading one cached token's K and V during decode
    compute_s_per_token: float  # matmul time of one token through the model
    overhead_s: float  # scheduling, sampling, launches, all-reduce latency
    kv_capacity_tokens: int
    # host-bound engines (the CPU worker) add costs that overlap nothing: per decoding sequence, per prefill token
    decode_s_per_seq: float = 0.0
    prefill_s_per_token: float = 0.0

    def step_s(self, n_decode: int, context_tokens: int, n_prefill: int) -> float:
        memory = self.weights_s + self.kv_s_per_token * context_tokens
        serial = self.decode_s_per_seq * n_decode + self.prefill_s_per_token * n_prefill
        return self.overhead_s + serial + max(memory, self.compute_s_per_token * (n_decode + n_prefill))

    @classmethod
    def from_model(cls, model: StepModel, max_batch: int = 256, chunk_tokens: int = 8192) -> StepProfile:
        """Read the roofline's coefficients off the performance model by probing its step time.

        Probes stay in each term's own regime: small decode batches for the memory side, a large
        prefill chunk for the compute side. Attention FLOPs of a prefill chunk are folded into its per-token
        cost at a typical context of one chunk.
        """
        ov = model.accelerator.step_overhead_s
        one = float(model.step_time(1, 0.0, 0.0))
        kv_probe = 4096.0
        kv_s = (float(model.step_time(1, 0.0, kv_probe)) - one) / kv_probe
        chunk = float(chunk_tokens)
        prefill = float(model.step_time(0, chunk, 0.0, chunk / 2)) - float(
            model.step_time(0, chunk / 2, 0.0, chunk / 2)
        )
        return cls(
            weights_s=one - ov,
            kv_s_per_token=kv_s,
            compute_s_per_token=prefill / (chunk / 2),
            overhead_s=ov,
            kv_capacity_tokens=int(model.kv_capacity_tokens(max_batch, chunk_tokens)),
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
    """One worker pod: its inbox of routed requests, its waiting queue and its running batch."""

    __slots__ = (
        "cache", "created", "done_at", "draining", "inbox", "kv_used", "ready_at", "running", "t", "waiting",
    )  # fmt: skip

    def __init__(self, created: float, ready_at: float, cache: PrefixCache | None = None) -> None:
        self.created = created
        self.ready_at = ready_at
        self.t = ready_at  # the replica's own clock: the end of its last step
        self.draining = False
        self.done_at: float | None = None
        self.inbox: deque[int] = deque()  # routed, not yet arrived at the replica's clock
        self.waiting: deque[int] = deque()
        self.running: list[list[int]] = []  # [rid, prefill_left, out_left, context]
        self.kv_used = 0
        self.cache = cache  # prefix blocks it holds, when the simulation routes by state

    @property
    def idle(self) -> bool:
        return not (self.inbox or self.waiting or self.running)


@dataclass
class _Records:
    """Per-request outcomes and this interval's raw metric samples."""

    first_token: np.ndarray
    finish: np.ndarray
    new_first: list[int] = field(default_factory=list)
    new_finished: list[int] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    itl_w: list[float] = field(default_factory=list)


class _Engine:
    """Steps replicas forward in time; shared by every replica of one simulation."""

    def __init__(self, trace: Trace, profile: StepProfile, config: EngineConfig, records: _Records) -> None:
        self.arrival = trace.arrival_s.tolist()
        self.prompt = trace.prompt_tokens.tolist()
        self.output = trace.output_tokens.tolist()
        self.profile = profile
        self.config = config
        self.rec = records
        self.routing: SimulatedRouting | None = None

    def _admissible(self, r: _Replica) -> bool:
        """A waiting request may join: a batch slot is free and its KV fits (or the replica is empty)."""
        if not r.waiting or len(r.running) >= self.config.max_batch:
            return False
        rid = r.waiting[0]
        return (
            not r.running
            or r.kv_used + self.prompt[rid] + self.output[rid] <= self.profile.kv_capacity_tokens
        )

    def _admit(self, r: _Replica) -> list[int]:
        rid = r.waiting.popleft()
        r.kv_used += self.prompt[rid] + self.output[rid]
        prefill = self.prompt[rid]
        if self.routing is not None and r.cache is not None:  # a cached prefix is not computed again
            prefill = self.routing.prefill(r.cache, rid, prefill)
        seq = [rid, prefill, self.output[rid], 0]
        r.running.append(seq)
        return seq

    def _pull(self, r: _Replica, until: float) -> None:
        while r.inbox and self.arrival[r.inbox[0]] <= until:
            r.waiting.append(r.inbox.popleft())

    def _finish(self, r: _Replica, seq: list[int], t: float) -> None:
        self.rec.finish[seq[0]] = t
        self.rec.new_finished.append(seq[0])
        r.kv_used -= self.prompt[seq[0]] + self.output[seq[0]]

    def advance(self, r: _Replica, t_end: float) -> None:
        """Run replica `r` until its clock reaches t_end (its last step may end a little later)."""
        p, cfg, rec = self.profile, self.config, self.rec
        while r.t < t_end:
            self._pull(r, r.t)
            if not r.running:
                if not r.waiting and not r.inbox:
                    r.t = t_end
                    return
                # idle: the engine starts a step one batch window after the first arrival
                first = r.waiting[0] if r.waiting else r.inbox[0]
                start = max(r.t, self.arrival[first] + cfg.batch_window_s)
                if start >= t_end:
                    if not r.waiting:
                        r.t = t_end
                    return
                r.t = start
                self._pull(r, r.t)
            decoding = [s for s in r.running if s[1] == 0]
            prefilling = [s for s in r.running if s[1] > 0]
            budget = max(cfg.chunk_tokens - len(decoding), 0)
            if not prefilling and (budget == 0 or not self._admissible(r)):
                self._decode_run(r, t_end)
                continue
            # vLLM's scheduler: partial prefills continue first, then waiting requests join while budget lasts
            takes = []
            for s in prefilling:
                take = min(s[1], budget)
                budget -= take
                takes.append(take)
            while budget > 0 and self._admissible(r):
                s = self._admit(r)
                take = min(s[1], budget)
                budget -= take
                prefilling.append(s)
                takes.append(take)
            ctx = sum(s[3] for s in decoding)
            d = p.step_s(len(decoding), ctx, sum(takes))
            r.t += d
            if decoding:
                rec.itl_s.append(d)
                rec.itl_w.append(len(decoding))
            done = []
            for s in decoding:
                s[2] -= 1
                s[3] += 1
                if s[2] == 0:
                    done.append(s)
            for s, take in zip(prefilling, takes, strict=True):
                s[1] -= take
                if take and s[1] == 0:
                    rec.first_token[s[0]] = r.t
                    rec.new_first.append(s[0])
                    s[2] -= 1
                    s[3] = self.prompt[s[0]] + 1
                    if s[2] == 0:
                        done.append(s)
            for s in done:
                self._finish(r, s, r.t)
                r.running.remove(s)

    def _decode_run(self, r: _Replica, t_end: float) -> None:
        """Steps with the same batch until the first completion, the next arrival or t_end, in closed form.

        Step j of the run takes overhead + max(memory0 + kv·b·j, compute·b): constant while compute bound,
        then growing linearly with the context, so the time of n steps has a closed form.
        """
        p = self.profile
        b = len(r.running)
        ctx0 = sum(s[3] for s in r.running)
        k = min(s[2] for s in r.running)
        stop = t_end if not r.inbox else min(t_end, self.arrival[r.inbox[0]])
        ov = p.overhead_s + p.decode_s_per_seq * b
        mem0, slope, comp = (
            p.weights_s + p.kv_s_per_token * ctx0,
            p.kv_s_per_token * b,
            p.compute_s_per_token * b,
        )
        flat = 0 if comp <= mem0 else (k if slope <= 0 else min(k, math.ceil((comp - mem0) / slope)))

        def elapsed(n: int) -> float:
            m = min(n, flat)
            return m * (ov + comp) + (n - m) * (ov + mem0) + slope * (n * (n - 1) - m * (m - 1)) / 2

        # steps start while the clock is before `stop`; at least one runs
        lo, hi = 1, k
        budget = stop - r.t
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if elapsed(mid - 1) < budget:
                lo = mid
            else:
                hi = mid - 1
        n = lo
        took = elapsed(n)
        self.rec.itl_s.append(took / n)
        self.rec.itl_w.append(b * n)
        r.t += took
        done = []
        for s in r.running:
            s[2] -= n
            s[3] += n
            if s[2] == 0:
                done.append(s)
        for s in done:
            self._finish(r, s, r.t)
            r.running.remove(s)


@dataclass(frozen=True)
class Timeline:
    """Per control interval, for plots: time, offered rps, ready and desired replicas, observed p95s."""

    time: np.ndarray
    rps: np.ndarray
    ready: np.ndarray
    desired: np.ndarray
    ttft_p95_ms: np.ndarray
    tpot_p95_ms: np.ndarray


@dataclass(frozen=True)
class SimResult:
    policy: str
    setting: str
    attainment: float
    ttft_p95_ms: float
    tpot_p95_ms: float
    gpu_hours: float
    cost: float
    scale_events: int
    requests: int
    ok: np.ndarray  # per request: met both targets
    ttft_ms: np.ndarray  # per request; NaN if it never got a first token
    tpot_ms: np.ndarray  # per request: (finish - first token) / (output - 1)
    timeline: Timeline

    def summary(self) -> dict[str, float | int | str]:
        return {
            "setting": self.setting,
            "attainment": round(self.attainment, 5),
            "ttft_p95_ms": round(self.ttft_p95_ms, 1),
            "tpot_p95_ms": round(self.tpot_p95_ms, 2),
            "gpu_hours": round(self.gpu_hours, 3),
            "cost": round(self.cost, 2),
            "scale_events": self.scale_events,
        }


@dataclass(frozen=True)
class SimConfig:
    profile: StepProfile
    engine: EngineConfig
    slo: SLOTarget
    gpus_per_replica: int = 1
    price_per_gpu_hour: float = 4.0
    start_delay_s: float = 90.0
    interval_s: float = 15.0
    initial_replicas: int = 1
    seed: int = 0
    routing: SimulatedRouting | None = None  # None: uniformly at random, as a Kubernetes Service spreads


def simulate(trace: Trace, controller: Controller, cfg: SimConfig, setting: str = "") -> SimResult:
    """Replay `trace` under `controller`; bill GPUs up to the trace end, then let in-flight requests finish."""
    n = len(trace)
    rng = np.random.default_rng(cfg.seed)
    rec = _Records(first_token=np.full(n, np.nan), finish=np.full(n, np.nan))
    engine = _Engine(trace, cfg.profile, cfg.engine, rec)
    engine.routing = cfg.routing
    new_cache = cfg.routing.new_cache if cfg.routing is not None else lambda: None
    horizon = trace.duration_s
    # warm at t=0
    pods = [_Replica(-cfg.start_delay_s, 0.0, new_cache()) for _ in range(cfg.initial_replicas)]
    retired: list[_Replica] = []
    pending: deque[int] = deque()  # arrived while no replica was ready (the Service had no endpoints)
    desired, events = cfg.initial_replicas, 0
    arrival = trace.arrival_s
    log: dict[str, list[float]] = {k: [] for k in ("time", "rps", "ready", "desired", "ttft", "tpot")}
    t0, nxt = 0.0, 0
    while True:
        t1 = t0 + cfg.interval_s
        live = sorted((r for r in pods if not r.draining), key=lambda r: r.ready_at)
        ready_at = np.array([r.ready_at for r in live])
        stop = int(np.searchsorted(arrival, t1, side="left"))
        routed = np.arange(nxt, stop)
        if pending and (ready_at <= t0).any():
            routed = np.r_[np.asarray(pending, dtype=int), routed]
            pending.clear()
        # each request goes to a random replica among those ready when it arrives, or where the router sends it
        eligible = np.searchsorted(ready_at, np.maximum(arrival[routed], t0), side="right")
        pick = (rng.random(len(routed)) * eligible).astype(int)
        for rid, k, e in zip(routed.tolist(), pick.tolist(), eligible.tolist(), strict=True):
            if e == 0:
                pending.append(rid)
            elif cfg.routing is None:
                live[k].inbox.append(rid)
            else:
                _route_by_state(engine, cfg.routing, live[:e], rid, max(float(arrival[rid]), t0))
        nxt = stop
        for r in pods:
            engine.advance(r, t1)
        for r in [r for r in pods if r.draining and r.idle]:
            r.done_at = max(r.t, t0)
            pods.remove(r)
            retired.append(r)
        obs = _observe(t1, cfg, trace, rec, pods, len(pending))
        live = [r for r in pods if not r.draining]
        ready = sum(r.ready_at <= t1 for r in live)
        log["time"].append(t1)
        log["rps"].append(float(np.sum((arrival >= t0) & (arrival < t1))) / cfg.interval_s)
        log["ready"].append(ready)
        log["desired"].append(desired)
        log["ttft"].append(np.nan if obs.ttft_p95_ms is None else obs.ttft_p95_ms)
        log["tpot"].append(np.nan if obs.tpot_p95_ms is None else obs.tpot_p95_ms)
        finished_all = nxt >= n and not pending and all(r.idle for r in pods)
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


def _route_by_state(
    engine: _Engine, routing: SimulatedRouting, ready: list[_Replica], rid: int, now: float
) -> None:
    """Bring the ready replicas to the request's arrival, then let the routing policy pick one from their state."""
    prompt = engine.prompt
    loads = []
    for r in ready:
        engine.advance(r, now)
        queued = [*r.waiting, *r.inbox]
        loads.append(
            ReplicaLoad(
                prefill_tokens=sum(s[1] for s in r.running) + sum(prompt[q] for q in queued),
                running=len(r.running),
                waiting=len(queued),
                kv_usage=r.kv_used / engine.profile.kv_capacity_tokens,
                prefix=r.cache if r.cache is not None else PrefixCache(0),
            )
        )
    ready[routing.choose(loads, rid, prompt[rid])].inbox.append(rid)


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
    victims = sorted(live, key=lambda r: (r.ready_at <= now, len(r.running) + len(r.waiting) + len(r.inbox)))
    for r in victims[: len(live) - target]:
        r.draining = True
        if r.ready_at > now:  # never became ready: deleted at once, nothing to drain
            r.inbox.clear()
            r.t = now


def _observe(
    t1: float, cfg: SimConfig, trace: Trace, rec: _Records, pods: list[_Replica], pending: int
) -> Observation:
    """This interval's histograms and gauges, through the same code path the operator's Prometheus reader uses.

    Latency histograms count what completed in the window (TTFT at the first token, inter-token gaps per
    step, token counts at finish); gauges are sampled at the window's end, as a scrape would.
    """
    first = np.asarray([i for i in rec.new_first if rec.first_token[i] <= t1], dtype=int)
    rec.new_first = [i for i in rec.new_first if rec.first_token[i] > t1]
    fin = np.asarray([i for i in rec.new_finished if rec.finish[i] <= t1], dtype=int)
    rec.new_finished = [i for i in rec.new_finished if rec.finish[i] > t1]
    window, cap = cfg.interval_s, cfg.profile.kv_capacity_tokens
    serving = [r for r in pods if r.ready_at <= t1]
    ready = [r for r in serving if not r.draining]
    waiting = sum(len(r.waiting) + sum(1 for i in r.inbox if trace.arrival_s[i] <= t1) for r in serving)
    window_data = TierWindow(
        ttft=Histogram.from_samples(TTFT_BUCKETS, rec.first_token[first] - trace.arrival_s[first]),
        itl=Histogram.from_samples(ITL_BUCKETS, np.asarray(rec.itl_s), np.asarray(rec.itl_w, dtype=float)),
        prompt_tokens=Histogram.from_samples(TOKEN_BUCKETS, trace.prompt_tokens[fin]),
        output_tokens=Histogram.from_samples(TOKEN_BUCKETS, trace.output_tokens[fin]),
        requests=float(len(fin)),
        running=float(sum(len(r.running) for r in serving)),
        waiting=float(waiting + pending),
        kv_cache_usage=float(np.mean([r.kv_used / cap for r in ready])) if ready else None,
        ready_replicas=len(ready),
    )
    rec.itl_s.clear()
    rec.itl_w.clear()
    obs = build_observation(t1, window, {"interactive": window_data}, ttft_target_s=cfg.slo.ttft_ms / 1000.0)
    assert obs is not None  # the window always carries series
    return obs


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
        timeline=Timeline(
            time=np.asarray(log["time"]),
            rps=np.asarray(log["rps"]),
            ready=np.asarray(log["ready"]),
            desired=np.asarray(log["desired"]),
            ttft_p95_ms=np.asarray(log["ttft"]),
            tpot_p95_ms=np.asarray(log["tpot"]),
        ),
    )
