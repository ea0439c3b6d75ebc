"""Scale to zero and back, as tables of observations → decisions, on the real planner (policies/idle.py).

A service with minReplicas 0 (and a router) goes to zero after the policy's idle period and not before; a
request the router holds at zero wakes it; a busy or unobserved window restarts the idle period; minReplicas ≥ 1
never goes to zero.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.autoscale import autoscale
from goodput.policies.baselines import KEDA
from goodput.policies.compare import GoodputController
from goodput.policies.demand import anticipated_load
from goodput.policies.plancache import PlanCache
from goodput.policies.routing import RoutingPolicy, SimulatedRouting
from goodput.policies.simulator import EngineConfig, FleetView, SimConfig, SLOTarget, StepProfile, simulate
from goodput.policies.types import Candidate, Observation, ScalerState
from goodput.policies.workloads import Trace
from testkit.specs import llama_h100

IDLE_S = 120.0
INTERVAL = 15.0
# no scale-down stabilization or cooldown: only the idle period stands between an idle service and zero
POLICY = SLOPolicySpec(
    scale_to_zero_after_seconds=IDLE_S, scale_down_stabilization_seconds=0, cooldown_seconds=0
)
MEMO = PlanCache()


def spec(min_replicas: int) -> InferenceServiceSpec:
    """The shared Llama/H100 service at `min_replicas`, with a router when that is 0 (the CRD requires one)."""
    wire = llama_h100(expected_rps=5).to_wire()
    wire["scaling"]["minReplicas"] = min_replicas
    if min_replicas == 0:
        wire["router"] = {}
    return InferenceServiceSpec.model_validate(wire)


def running_plan(replicas: int) -> Candidate:
    s = spec(1)
    chosen = planner.plan(s, replace(planner.load_from_spec(s), rps=5.0), POLICY).chosen
    assert chosen is not None
    tiers = tuple(replace(t, replicas=replicas) for t in chosen.tiers)
    per = chosen.cost_per_hour / chosen.replicas
    return replace(chosen, replicas=replicas, tiers=tiers, cost_per_hour=per * replicas)


def window(
    t: float,
    requests: float = 0.0,
    running: float | None = 0.0,
    waiting: float | None = 0.0,
    router_queued: float | None = 0.0,
    router_in_flight: float | None = 0.0,
) -> Observation:
    return Observation(
        time=t, window_s=INTERVAL, rps=requests / INTERVAL, requests=requests, ttft_p95_ms=None,
        tpot_p95_ms=None, kv_cache_usage=None if running is None else 0.0, queue_depth=waiting, running=running,
        router_queued=router_queued, router_in_flight=router_in_flight,
    )  # fmt: skip


def replay(min_replicas: int, windows: list[Observation], replicas: int = 2) -> list[tuple[float, int, str]]:
    """(time, replicas decided, reason) per window, each decision applied before the next."""
    current, state, out = running_plan(replicas), ScalerState(), []
    s = spec(min_replicas)
    for w in windows:
        d = autoscale(s, POLICY, current, w, state, w.time, plan_fn=MEMO)
        current, state = d.plan, d.state
        out.append((w.time, d.plan.replicas, d.reason))
    return out


def idle_windows(start: float, count: int) -> list[Observation]:
    return [window(start + INTERVAL * i) for i in range(count)]


def test_an_idle_service_goes_to_zero_after_the_idle_period_and_not_before() -> None:
    decided = replay(0, idle_windows(0.0, 12))
    first_idle = decided[0][0]
    for t, replicas, reason in decided:
        if t - first_idle < IDLE_S:
            assert replicas >= 1, (t, reason)
        else:
            assert replicas == 0, (t, reason)
    zero = next((t, reason) for t, replicas, reason in decided if replicas == 0)
    assert zero[0] - first_idle == IDLE_S
    assert (
        "scaled to zero" in zero[1]
        and f"idle (no request finished, queued or running) for {IDLE_S:.0f} s" in zero[1]
    )
    assert decided[-1][2].startswith("holding interactive at 0: scaled to zero")


@pytest.mark.parametrize(
    "busy",
    [
        {"requests": 3.0},  # a request finished
        {"running": 1.0},  # one still decodes
        {"waiting": 1.0},  # one waits in a worker
        {"router_queued": 1.0},  # one waits in the router
        {"router_in_flight": 1.0},  # the router streams one whose worker metrics are late
    ],
)
def test_any_busy_window_restarts_the_idle_period(busy: dict[str, float]) -> None:
    windows = [*idle_windows(0.0, 6), window(90.0, **busy), *idle_windows(105.0, 9)]
    decided = replay(0, windows)
    zero_at = next(t for t, replicas, _ in decided if replicas == 0)
    assert zero_at == 105.0 + IDLE_S


def test_a_window_without_metrics_is_not_idle() -> None:
    """Missing metrics hold, and restart the idle period: the operator never scales to zero blind."""
    s, current, state = spec(0), running_plan(1), ScalerState()
    decided = []
    for t in (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0, 105.0, 120.0, 135.0):
        observation = None if t in (60.0, 75.0) else window(t)
        d = autoscale(s, POLICY, current, observation, state, t, plan_fn=MEMO)
        current, state = d.plan, d.state
        decided.append((t, d.plan.replicas))
    assert all(replicas == 1 for _, replicas in decided)


def test_a_request_held_by_the_router_at_zero_wakes_one_replica_within_the_interval() -> None:
    s, state = spec(0), ScalerState(idle_since=0.0)
    zero = replace(running_plan(0), tiers=tuple(replace(t, replicas=0) for t in running_plan(1).tiers))
    # at zero no worker runs: the router's series are the observation
    quiet = window(600.0, running=None, waiting=None)
    held = window(615.0, running=None, waiting=None, router_queued=1.0)
    hold = autoscale(s, POLICY, zero, quiet, state, 600.0, plan_fn=MEMO)
    assert (hold.action, hold.plan.replicas) == ("hold", 0)
    assert hold.reason == "holding interactive at 0: scaled to zero, no request held by the router"
    woken = autoscale(s, POLICY, hold.plan, held, hold.state, 615.0, plan_fn=MEMO)
    assert (woken.action, woken.plan.replicas) == ("scale", 1)
    assert [t.replicas for t in woken.plan.tiers] == [1]
    assert woken.reason.startswith("scaled interactive 0→1: woke from zero: 1 request(s) held by the router")
    assert woken.state.idle_since is None
    # the pod starts: the router's series alone again, with a replica planned: hold, never back to zero blind
    starting = autoscale(s, POLICY, woken.plan, held, woken.state, 630.0, plan_fn=MEMO)
    assert (starting.action, starting.plan.replicas, starting.metrics_available) == ("hold", 1, False)


@pytest.mark.parametrize("min_replicas", [1, 2])
def test_min_replicas_of_one_or_more_never_goes_to_zero(min_replicas: int) -> None:
    decided = replay(min_replicas, idle_windows(0.0, 60), replicas=3)
    assert min(replicas for _, replicas, _ in decided) == min_replicas


def test_the_router_queue_is_demand_and_backlog_like_the_workers_waiting() -> None:
    """A burst held at the router grows the fleet as the same burst waiting in the workers would."""
    s = spec(1)
    in_workers = window(0.0, requests=150.0, running=32.0, waiting=3000.0, router_queued=0.0)
    in_router = window(0.0, requests=150.0, running=32.0, waiting=0.0, router_queued=3000.0)
    nowhere = window(0.0, requests=150.0, running=32.0, waiting=0.0, router_queued=0.0)
    demand_workers = anticipated_load(s, POLICY, in_workers, ScalerState(), 0.0).demand_rps
    demand_router = anticipated_load(s, POLICY, in_router, ScalerState(), 0.0).demand_rps
    demand_none = anticipated_load(s, POLICY, nowhere, ScalerState(), 0.0).demand_rps
    assert demand_router == demand_workers == demand_none + 3000.0 / INTERVAL
    current = running_plan(2)
    grown = autoscale(s, POLICY, current, in_router, ScalerState(), 0.0, plan_fn=MEMO)
    same = autoscale(s, POLICY, current, in_workers, ScalerState(), 0.0, plan_fn=MEMO)
    assert grown.plan.replicas == same.plan.replicas > current.replicas


def test_the_simulated_fleet_with_a_router_sleeps_through_a_gap_and_serves_what_arrives_at_zero() -> None:
    """The same decision in trace replay: requests arriving at zero wait in the simulated router's queue (its
    depth is what wakes the fleet), and every one of them is served once a replica has started."""
    s = spec(0)
    policy = SLOPolicySpec(scale_to_zero_after_seconds=IDLE_S)
    rng = np.random.default_rng(0)
    arrivals = np.sort(np.r_[rng.uniform(0, 60, 60), rng.uniform(900, 960, 60)])
    trace = Trace("gap", arrivals, np.full(len(arrivals), 100), np.full(len(arrivals), 5))
    profile = StepProfile(
        weights_s=0.010,
        kv_s_per_token=0.0,
        compute_s_per_token=0.001,
        overhead_s=0.0,
        kv_capacity_tokens=10**6,
    )
    routing = SimulatedRouting(RoutingPolicy(), [() for _ in arrivals], cache_blocks=1000)
    cfg = SimConfig(
        profile=profile,
        engine=EngineConfig(max_batch=8, batch_window_s=0.0, chunk_tokens=1000),
        slo=SLOTarget(ttft_ms=60_000, tpot_ms=1000),
        start_delay_s=30.0,
        interval_s=INTERVAL,
        initial_replicas=1,
        routing=routing,
    )
    plan = running_plan(1)
    controller = GoodputController(s, policy, plan, ScalerState(), MEMO)
    result = simulate(trace, controller, cfg)
    desired, time = result.timeline.desired, result.timeline.time
    asleep = time[desired == 0]
    assert asleep.size and asleep.min() < 900.0 - INTERVAL  # at zero before the second burst
    assert desired[time > 900.0 + 2 * INTERVAL].max() >= 1  # woken by the requests the router held
    assert np.isfinite(result.ttft_ms).all()  # every request was served, none lost at zero
    assert result.ttft_ms[arrivals >= 900][0] >= cfg.start_delay_s * 1000  # the first waited for the wake


def test_keda_behind_a_router_activates_on_the_requests_it_holds() -> None:
    """The KEDA baseline in a routed replay: at zero the router holds the requests, and they activate it."""
    keda = KEDA(threshold=5, min_replicas=0)
    held = window(0.0, running=None, waiting=None, router_queued=3.0)
    assert keda.decide(0.0, held, FleetView(0, 0, 0)).replicas == 1
