"""What users run today, implemented to their documentation, and a hindsight oracle that marks the limit.

- HPA (autoscaling/v2, Kubernetes docs "Horizontal Pod Autoscaling"): every 15 s,
  desired = ceil(current · metric / target) with the metric averaged over ready pods; no change within a 10%
  tolerance; on scale-up, pods that are not ready yet count as using 0; scale-up limited per 15 s period to
  the larger of +100% and +4 pods; scale-down stabilization takes the highest recommendation of the last 300 s.
- KEDA (ScaledObject, prometheus trigger, metricType AverageValue): KEDA feeds an external metric to an HPA,
  so desired = ceil(total / threshold) under the same HPA behaviour; with minReplicaCount 0 it activates from
  zero when the metric exceeds the activation threshold and returns to zero after its cooldown period.
- Static: a fixed replica count.
- Oracle: the fewest replicas per interval that meet the SLO, found with the whole trace in hand, with pods
  requested one start delay ahead so they are ready when their interval begins. A hindsight search, not a
  proven lower bound: a better search may find a cheaper schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from goodput.policies.simulator import Actuation, FleetView, SimConfig, SimResult, simulate
from goodput.policies.types import Observation
from goodput.policies.workloads import Trace

UNIFORM_STEPS = 6  # bisection steps of the oracle's uniform search: the rate to within 1/64 of its range


@dataclass
class HPABehavior:
    """The defaults of autoscaling/v2 `behavior`."""

    sync_s: float = 15.0
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 300.0
    scale_up_stabilization_s: float = 0.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0


@dataclass
class _HPACore:
    """The HPA controller's replica calculation and behaviour, fed a total and a per-replica target."""

    min_replicas: int
    max_replicas: int
    behavior: HPABehavior
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, recommendation)
    last_sync: float = -math.inf

    def recommend(self, total: float | None, target: float, fleet: FleetView, per_ready_pod: bool) -> int:
        current = fleet.desired
        if total is None:  # no metric: the HPA does not act
            return current
        if per_ready_pod:
            if fleet.ready == 0:
                return current
            tol = self.behavior.tolerance
            ratio = total / (target * fleet.ready)
            if abs(ratio - 1.0) <= tol:
                return current
            if ratio > 1.0 and fleet.starting:
                # not-yet-ready pods count as using 0 on scale-up; if that reverses or settles it, hold
                ratio = total / (target * (fleet.ready + fleet.starting))
                if ratio <= 1.0 + tol:
                    return current
                return math.ceil(ratio * (fleet.ready + fleet.starting))
            return math.ceil(ratio * fleet.ready)
        # AverageValue on an external metric: usage ratio against the current replica count
        if current == 0:
            return math.ceil(total / target)
        ratio = total / (target * current)
        if abs(ratio - 1.0) <= self.behavior.tolerance:
            return current
        return math.ceil(total / target)

    def stabilize(self, now: float, raw: int, current: int) -> int:
        b = self.behavior
        raw = min(max(raw, self.min_replicas), self.max_replicas)
        self.history.append((now, raw))
        keep = max(b.scale_down_stabilization_s, b.scale_up_stabilization_s)
        self.history = [(t, r) for t, r in self.history if t > now - keep]
        down_window = [r for t, r in self.history if t > now - b.scale_down_stabilization_s]
        up_window = [r for t, r in self.history if t > now - b.scale_up_stabilization_s] or [raw]
        desired = current
        if raw > current:
            desired = min(up_window) if up_window else raw
            limit = max(math.floor(current * (1 + b.scale_up_percent / 100.0)), current + b.scale_up_pods)
            desired = min(max(desired, current), limit)
        elif raw < current:
            desired = max(down_window)
            limit = math.ceil(current * (1 - b.scale_down_percent / 100.0))
            desired = max(min(desired, current), limit)
        return min(max(desired, self.min_replicas), self.max_replicas)


@dataclass
class HPA:
    """HPA on a per-pod average of `vllm:num_requests_running` (or `vllm:kv_cache_usage_perc`)."""

    target: float
    metric: str = "running"  # "running" | "kv"
    min_replicas: int = 1
    max_replicas: int = 64
    behavior: HPABehavior = field(default_factory=HPABehavior)
    name: str = "hpa"

    def __post_init__(self) -> None:
        self._core = _HPACore(self.min_replicas, self.max_replicas, self.behavior)

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation:
        if now - self._core.last_sync < self.behavior.sync_s - 1e-9:
            return Actuation(fleet.desired)
        self._core.last_sync = now
        if obs is None:
            return Actuation(fleet.desired)
        if self.metric == "running":
            total = obs.running
        elif obs.kv_cache_usage is not None and obs.ready_replicas:
            total = obs.kv_cache_usage * obs.ready_replicas
        else:
            total = None
        raw = self._core.recommend(total, self.target, fleet, per_ready_pod=True)
        return Actuation(self._core.stabilize(now, raw, fleet.desired))


@dataclass
class KEDA:
    """KEDA ScaledObject on `sum(vllm:num_requests_waiting)` with an AverageValue threshold per replica."""

    threshold: float
    activation_threshold: float = 0.0
    min_replicas: int = 1  # minReplicaCount; 0 enables activation and scale to zero
    max_replicas: int = 64
    cooldown_s: float = 300.0  # cooldownPeriod before going back to zero
    behavior: HPABehavior = field(default_factory=HPABehavior)
    name: str = "keda"

    def __post_init__(self) -> None:
        self._core = _HPACore(max(self.min_replicas, 1), self.max_replicas, self.behavior)
        self._last_active: float | None = None  # the cooldown counts from the first look

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation:
        if now - self._core.last_sync < self.behavior.sync_s - 1e-9:
            return Actuation(fleet.desired)
        self._core.last_sync = now
        # behind a router the waiting requests include those it holds (a KEDA user scales on both)
        waiting = None if obs is None else obs.queue_depth if obs.router_queued is None else obs.backlog
        if self.min_replicas == 0:
            active = waiting is not None and waiting > self.activation_threshold
            busy = obs is not None and (obs.running or 0) > 0
            if active or busy or self._last_active is None:
                self._last_active = now
            if fleet.desired == 0:
                return Actuation(1 if active else 0)
            if not active and not busy and now - self._last_active >= self.cooldown_s:
                self._core.history.clear()
                return Actuation(0)
        raw = self._core.recommend(waiting, self.threshold, fleet, per_ready_pod=False)
        return Actuation(self._core.stabilize(now, raw, fleet.desired))


@dataclass
class Static:
    replicas: int
    name: str = "static"

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation:
        return Actuation(self.replicas)


@dataclass
class Schedule:
    """Replays a per-interval need with pods requested one start delay ahead: the oracle's actuator.

    At time t it keeps max(need over [t, t + delay]) replicas, so pods exist for every interval that needs
    them and new ones are ready when their interval begins.
    """

    need: np.ndarray  # replicas wanted ready during each interval, from t=0
    interval_s: float
    start_delay_s: float
    name: str = "oracle"

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation:
        first = int(now // self.interval_s)
        last = int((now + self.start_delay_s) // self.interval_s) + 1
        window = self.need[first : last + 1]
        return Actuation(int(window.max()) if len(window) else 0)


def oracle(
    trace: Trace,
    cfg: SimConfig,
    capacity_rps: float,
    max_rounds: int = 10,
    max_replicas: int = 64,
) -> tuple[SimResult, np.ndarray]:
    """Hindsight: the fewest replicas per interval that meet the attainment target, knowing every arrival.

    Two searches, the cheaper schedule that meets the target wins. Local: start from the throughput bound
    (arrivals in the interval over one replica's sustainable rate `capacity_rps`), add replicas where
    requests missed the SLO until the trace meets the target, then take back replicas from intervals without
    misses while the target still holds. Uniform: every interval sized for the same per-replica rate, the
    highest that meets the target (bisection); on smooth traffic the local search stops well above it.
    """
    n_int = math.ceil(trace.duration_s / cfg.interval_s) + 1
    bucket = np.minimum((trace.arrival_s // cfg.interval_s).astype(int), n_int - 1)
    rate = np.bincount(bucket, minlength=n_int) / cfg.interval_s
    need = np.maximum(np.ceil(rate / capacity_rps).astype(int), 1)

    def run(need: np.ndarray) -> SimResult:
        schedule = Schedule(need.copy(), cfg.interval_s, cfg.start_delay_s)
        warm = replace(cfg, initial_replicas=schedule.decide(0.0, None, FleetView(0, 0, 0)).replicas)
        return simulate(trace, schedule, warm, "hindsight")

    uniform = _uniform_schedule(rate, cfg, capacity_rps, run)
    best = run(need)
    rounds = 0
    while best.attainment < cfg.slo.attainment and rounds < max_rounds:
        missed = np.bincount(bucket[~best.ok], minlength=n_int)
        # the interval a miss arrives in and the one before it, where its queue built up
        hot = (missed > 0) | (np.r_[missed[1:], 0] > 0)
        need = np.where(hot, np.minimum(need + 1, max_replicas), need)
        best = run(need)
        rounds += 1
    floor = np.maximum(np.ceil(rate / capacity_rps).astype(int), 1)
    while rounds < max_rounds:
        missed = np.bincount(bucket[~best.ok], minlength=n_int)
        calm = (missed == 0) & (np.r_[missed[1:], 0] == 0) & (need > floor)
        if not calm.any():
            break
        trial_need = np.where(calm, need - 1, need)
        trial = run(trial_need)
        rounds += 1
        if trial.attainment < cfg.slo.attainment or trial.gpu_hours >= best.gpu_hours:
            break
        best, need = trial, trial_need
    met = [(r, n) for r, n in ((best, need), uniform) if r is not None and r.attainment >= cfg.slo.attainment]
    return min(met, key=lambda m: m[0].gpu_hours) if met else (best, need)


def _uniform_schedule(
    rate: np.ndarray,
    cfg: SimConfig,
    capacity_rps: float,
    run: Callable[[np.ndarray], SimResult],
    steps: int = UNIFORM_STEPS,
) -> tuple[SimResult | None, np.ndarray]:
    """The cheapest schedule sizing every interval for one per-replica rate that meets the target.

    Bisects the rate between a quarter and all of the sustainable rate; (None, bound) when none meets it.
    """

    def need_at(per_replica: float) -> np.ndarray:
        return np.maximum(np.ceil(rate / per_replica).astype(int), 1)

    lo, hi = 0.25 * capacity_rps, capacity_rps
    found: tuple[SimResult | None, np.ndarray] = (None, need_at(capacity_rps))
    for _ in range(steps):
        mid = (lo + hi) / 2
        result = run(need_at(mid))
        if result.attainment >= cfg.slo.attainment:
            found, lo = (result, need_at(mid)), mid
        else:
            hi = mid
    return found
