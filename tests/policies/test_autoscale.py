"""autoscale as tables of observation → decision, on the real planner and perf model."""

import math
import re
from dataclasses import replace
from itertools import pairwise

import pytest

from goodput.crds.slopolicy import SLOPolicySpec, WindowRange
from goodput.policies import planner
from goodput.policies.autoscale import HINT_TRUST_WINDOWS, autoscale
from goodput.policies.budget import BUDGET_HORIZON_S, budgeted_headroom
from goodput.policies.calibration import bucket_ratio
from goodput.policies.calibration import predict as _predict
from goodput.policies.capacity import TRUST_STEP, capacity_factor, configuration
from goodput.policies.observe import TTFT_BUCKETS
from goodput.policies.plancache import PlanCache
from goodput.policies.types import Candidate, Observation, PlanResult, ScalerState
from testkit.observations import steady_window as obs
from testkit.specs import llama_h100

SPEC = llama_h100(expected_rps=5)
POLICY = SLOPolicySpec()
MEMO = PlanCache()  # the planner, memoized as in the operator: loops over many intervals stay fast


def plan_at(rps: float, ttft_factor: float = 1.0, tpot_factor: float = 1.0) -> Candidate:
    load = replace(planner.load_from_spec(SPEC), rps=rps)
    chosen = planner.plan(SPEC, load, POLICY, ttft_factor, tpot_factor).chosen
    assert chosen is not None
    return chosen


def test_spike_scales_up_to_the_planned_count_in_one_step():
    current = plan_at(2.0)
    spike = next(
        r for r in (20.0, 40.0, 60.0, 80.0, 120.0, 160.0) if plan_at(r).replicas >= current.replicas + 3
    )
    want = plan_at(spike).replicas
    assert want - current.replicas <= POLICY.max_scale_up_step  # within one step of the policy
    # no latency yet: nothing to calibrate, the plan alone decides
    calm = autoscale(SPEC, POLICY, current, obs(85.0, 2.0, ready=current.replicas), ScalerState(), 85.0)
    one = autoscale(SPEC, POLICY, current, obs(100.0, spike, ready=current.replicas), calm.state, 100.0)
    assert one.action == "hold"  # one window's rate may be noise: the up window waits for a second
    o = obs(115.0, spike, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, one.state, 115.0)
    assert d.action == "scale"
    assert d.plan.replicas >= want > current.replicas
    assert d.plan.replicas <= plan_at(spike * 1.05).replicas  # the 5% rate grid rounds up, never more
    assert re.fullmatch(
        rf"scaled interactive {current.replicas}→{d.plan.replicas}: planned for [\d.]+ rps at {spike:g} rps",
        d.reason,
    ), d.reason


def test_slo_breach_with_a_queue_scales_reactively():
    current = plan_at(10.0)
    o = obs(100.0, 10.0, ttft=2500, tpot=20, queue=50, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0)
    assert d.plan.replicas > plan_at(10.0).replicas
    assert d.reason.startswith(
        f"scaled interactive {current.replicas}→{d.plan.replicas}: TTFT p95 2500 ms > 1000 ms"
    )
    assert d.slo_met is False


@pytest.mark.parametrize(
    ("rps", "queue_per_replica", "by_ratio"),
    [
        (10.0, 12, True),  # a 1.2 s mean wait (3.6 s at p95): the queue explains the 2.5 s p95
        (10.0, 1, False),  # a request or so per replica waiting: long prompts' own prefill, not a shortfall
        (40.0, 3, False),  # a few per replica at a high rate: a 0.1-0.3 s mean wait cannot make a 2.5 s p95
    ],
)
def test_a_ttft_breach_scales_by_the_ratio_only_where_the_queue_explains_it(rps, queue_per_replica, by_ratio):
    """More replicas shorten a queue's wait, not long prompts' own prefill: the ratio applies where the wait
    the queue implies (Little's law, its p95 about 3 times the mean) reaches the target; otherwise the breach
    only makes the plan urgent."""
    current = plan_at(rps)
    ready = current.replicas
    o = obs(100.0, rps, ttft=2500, queue=queue_per_replica * ready, ready=ready)
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0)
    assert (d.plan.replicas >= math.ceil(ready * 2.0)) == by_ratio  # the ratio is capped at 2×
    assert d.slo_met is False


@pytest.mark.parametrize(
    "ttft, queue",
    [(2500.0, 1.0), (None, 50.0)],  # a breach with one request queued; a queue beyond the ready replicas
)
def test_a_breach_or_a_queue_skips_the_up_window(ttft: float | None, queue: float):
    current = plan_at(40.0)
    assert current.replicas > 1
    calm = autoscale(SPEC, POLICY, current, obs(85.0, 40.0, ready=current.replicas), ScalerState(), 85.0)
    o = obs(100.0, 120.0, ttft=ttft, tpot=20, queue=queue, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, calm.state, 100.0)
    assert d.action == "scale" and d.plan.replicas > current.replicas
    quiet = obs(100.0, 120.0, ready=current.replicas)  # the same rate, nothing queued: the up window waits
    assert autoscale(SPEC, POLICY, current, quiet, calm.state, 100.0).action == "hold"


def test_a_draining_backlog_is_no_breach_to_scale_for():
    """Late first tokens while the queue shrinks are the queue's past: the fleet already serves more than
    arrives, so the breach does not scale it again."""
    current = plan_at(10.0)
    building = autoscale(
        SPEC, POLICY, current, obs(100.0, 10.0, ttft=2500, queue=50, ready=2), ScalerState(), 100.0
    )
    assert building.action == "scale"
    after = replace(building.state, recommendations=())
    draining = autoscale(
        SPEC,
        POLICY,
        building.plan,
        obs(115.0, 14.0, ttft=2500, queue=20, ready=building.plan.replicas),
        after,
        115.0,
    )
    assert "TTFT p95" not in draining.reason


def test_the_arrival_rate_not_the_drain_is_remembered_as_a_peak():
    """A backlog that drains completes more than arrives: completions plus the backlog would count the drain
    twice, and the peak remembered from it would hold a fleet the traffic never needed."""
    current, state = plan_at(10.0), ScalerState()
    windows = [(10.0, 0.0), (10.0, 150.0), (20.0, 0.0)]  # (completions, queued): a queue builds, then drains
    for step, (rps, queue) in enumerate(windows):
        now = 100.0 + 15.0 * step
        d = autoscale(SPEC, POLICY, current, obs(now, rps, queue=queue, ready=current.replicas), state, now)
        current, state = d.plan, d.state
    arrivals = [rps for _, rps in state.load_history]
    assert max(arrivals) == pytest.approx(20.0)  # 10 done + 150 queued in 15 s; then 20 done, 150 drained
    assert state.load_history[-1][1] == pytest.approx(10.0)


def test_slow_decline_scales_down_only_after_the_stabilization_window():
    peak = 160.0
    current, state = plan_at(peak), ScalerState()
    history = []
    for step in range(150):  # 37 minutes, load falling by 2% an interval
        now = 15.0 * step
        rps = peak * 0.98**step
        d = autoscale(SPEC, POLICY, current, obs(now, rps, ready=current.replicas), state, now, plan_fn=MEMO)
        history.append((now, current.replicas, d.plan.replicas))
        current, state = d.plan, d.state
    downs = [(t, a, b) for t, a, b in history if b < a]
    assert downs, "the fleet never shrank"
    assert downs[0][0] >= POLICY.scale_down_stabilization_seconds
    assert all(a - b <= POLICY.max_scale_down_step for _, a, b in downs)
    assert all(b >= a for t, a, b in history if t < POLICY.scale_down_stabilization_seconds)
    assert history[-1][2] < plan_at(peak).replicas


HINTED = SPEC.model_copy(update={"traffic": SPEC.traffic.model_copy(update={"expected_rps": 200.0})})


def _replay_hinted(rates: list[float]) -> dict[float, int]:
    """Replicas per interval of a fresh autoscaler for a 200 rps hint, fed these rates one interval each."""
    current, state = plan_at(200.0), ScalerState()
    sizes = {}
    for step, rps in enumerate(rates, start=1):
        now = 15.0 * step
        d = autoscale(
            HINTED, POLICY, current, obs(now, rps, ready=current.replicas), state, now, plan_fn=MEMO
        )
        current, state = d.plan, d.state
        sizes[now] = current.replicas
    return sizes


def test_steady_traffic_replaces_the_hint_after_a_few_windows():
    low = plan_at(10.0 * 1.05).replicas
    assert plan_at(200.0).replicas > low + POLICY.max_scale_down_step
    sizes = _replay_hinted([10.0] * 40)  # 10 minutes of steady traffic far below the hint
    trusted = 15.0 * HINT_TRUST_WINDOWS
    assert all(n == plan_at(200.0).replicas for t, n in sizes.items() if t < trusted)
    assert sizes[trusted + 15.0] < plan_at(200.0).replicas  # observations decide from then on
    assert sizes[600.0] == low


def test_on_off_traffic_keeps_the_hinted_fleet_for_one_window():
    sizes = _replay_hinted([10.0, 0.0] * 20)  # bursts with quiet gaps: never steady, so the hint stands
    window = POLICY.scale_down_stabilization_seconds
    assert all(n == plan_at(200.0).replicas for t, n in sizes.items() if t < window - 15.0)
    assert sizes[600.0] < plan_at(200.0).replicas  # the hint is no remembered peak: it goes with its window


def test_without_a_hint_a_fresh_autoscaler_follows_the_traffic_at_once():
    unhinted = SPEC.model_copy(update={"traffic": SPEC.traffic.model_copy(update={"expected_rps": None})})
    current = plan_at(200.0)
    d = autoscale(unhinted, POLICY, current, obs(15.0, 10.0, ready=current.replicas), ScalerState(), 15.0)
    assert d.plan.replicas == current.replicas - POLICY.max_scale_down_step


@pytest.mark.parametrize("stale_by", [None, 61.0, 600.0])
def test_missing_or_stale_metrics_hold_and_never_scale_down(stale_by):
    current = plan_at(40.0)
    o = None if stale_by is None else obs(1000.0 - stale_by, 0.0, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 1000.0)
    assert d.action == "hold" and d.plan == current
    assert d.metrics_available is False and d.slo_met is None
    assert d.reason.startswith(f"holding interactive at {current.replicas}:")


def test_zero_traffic_is_an_observation():
    current = plan_at(5.0)
    d = autoscale(SPEC, POLICY, current, obs(100.0, 0.0, ready=current.replicas), ScalerState(), 100.0)
    assert d.metrics_available is True
    assert d.plan.replicas <= current.replicas


def test_oscillating_load_does_not_flap():
    current, state = plan_at(20.0), ScalerState()
    sizes = []
    for step in range(120):  # 30 minutes alternating 20 and 120 rps every interval
        now = 15.0 * step
        rps = 120.0 if step % 2 else 20.0
        d = autoscale(SPEC, POLICY, current, obs(now, rps, ready=current.replicas), state, now, plan_fn=MEMO)
        current, state = d.plan, d.state
        sizes.append(current.replicas)
    changes = sum(1 for a, b in pairwise(sizes) if a != b)
    assert max(sizes) > plan_at(20.0).replicas
    assert changes <= 2
    assert min(sizes[4:]) == max(sizes[4:])  # after the first rise it holds the peak's capacity


@pytest.mark.parametrize(
    ("proven_share", "expected"),
    [
        (None, "learned"),  # nothing proven yet: the learned factor alone plans
        (1.0, "floor"),  # proven at today's per-replica load: at most half again above it
        (0.01, "model"),  # proven far below: never more than the model alone would plan
    ],
)
def test_learned_capacity_plans_a_replica_near_the_load_it_was_seen_to_carry(proven_share, expected):
    """A factor of 2 learned at one load is not evidence at twice that load: the plan keeps the replicas
    that hold each within TRUST_STEP of the highest per-replica rate proven within the SLO."""
    rps = 200.0
    current = plan_at(rps)
    ready = current.replicas
    key = configuration(current)
    proven = () if proven_share is None else ((key, proven_share * rps / ready),)
    state = ScalerState(capacity=((key, 2.0, 10),), proven=proven)
    d = autoscale(
        SPEC, POLICY, current, obs(100.0, rps, ready=ready), state, 100.0
    )  # no TTFT: proves nothing
    assert d.state.proven == proven
    raw = d.state.recommendations[-1][1]
    learned = autoscale(SPEC, POLICY, current, obs(100.0, rps, ready=ready), replace(state, proven=()), 100.0)
    unaided = ready  # the model's own plan for this load is the running fleet
    assert learned.state.recommendations[-1][1] < ready
    want = {
        "learned": learned.state.recommendations[-1][1],
        "floor": math.ceil(rps / (TRUST_STEP * rps / ready)),
        "model": unaided,
    }[expected]
    assert raw == want


@pytest.mark.parametrize(("observed_over_predicted", "direction"), [(5.0, 1), (1 / 3, -1)])
def test_calibration_factor_moves_the_plan_the_right_way(observed_over_predicted, direction):
    rps = 100.0
    current = plan_at(rps)
    # a steady window whose p95 TTFT and inter-token median are the model's predictions times the ratio
    o = obs(100.0, rps, ready=current.replicas, window=60.0)
    ttft_pred, tpot_pred = _predict(SPEC, current, o, ScalerState(), rps / current.replicas)
    o = replace(
        o, ttft_p95_ms=ttft_pred * observed_over_predicted, tpot_p50_ms=tpot_pred * observed_over_predicted
    )
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0)
    assert d.state.calibration_samples == 1
    # slower than the model and past half the target (here queueing dominates TTFT) is learned as a lower
    # capacity; faster than the model even unloaded, as a faster prefill
    learned = {name: k for name, k, _ in d.state.capacity}.get(configuration(current), 1.0)
    assert (d.state.ttft_factor - 1.0) * direction > 0 or (learned - 1.0) * -direction > 0
    assert (d.state.tpot_factor - 1.0) * direction > 0
    lo, hi = POLICY.calibration.min_factor, POLICY.calibration.max_factor
    assert lo <= d.state.tpot_factor <= hi
    k = capacity_factor(d.state, current)
    moved = plan_at(rps / k, d.state.ttft_factor, d.state.tpot_factor).replicas
    assert (moved - current.replicas) * direction > 0


def test_calibration_ignores_what_a_histogram_bucket_cannot_tell():
    assert (
        bucket_ratio(observed_ms=300.0, predicted_ms=400.0, bounds_s=TTFT_BUCKETS) == 1.0
    )  # both in (250, 500]
    assert bucket_ratio(observed_ms=300.0, predicted_ms=125.0, bounds_s=TTFT_BUCKETS) == pytest.approx(2.0)
    assert bucket_ratio(observed_ms=300.0, predicted_ms=1000.0, bounds_s=TTFT_BUCKETS) == pytest.approx(0.5)


def test_burst_backlog_and_calibration_skip():
    current = plan_at(20.0)
    # a backlog larger than the fleet: TTFT is queueing, not model error, so the factors stay
    o = obs(100.0, 20.0, ttft=5000, tpot=30, queue=10 * current.replicas, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0)
    assert d.state.ttft_factor == 1.0 and d.state.calibration_samples == 0
    assert d.plan.replicas > current.replicas  # the backlog counts as demand


@pytest.mark.parametrize(
    ("ttft", "previous_rps", "calibrates"),
    [
        (700.0, 20.0, True),  # steady: the same rate as the previous window
        (700.0, 22.0, True),
        (1500.0, 20.0, False),  # a breach is overload, for the reactive path, not model error
        (700.0, 60.0, False),  # right after a burst: its aftermath is not the steady state at 20 rps
        (700.0, 5.0, False),  # the start of a burst: clustered arrivals
    ],
)
def test_calibration_learns_only_from_steady_windows(ttft, previous_rps, calibrates):
    current = plan_at(20.0)
    state = ScalerState(load_history=((85.0, previous_rps),))
    o = obs(100.0, 20.0, ttft=ttft, tpot=20, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, state, 100.0)
    assert d.state.ttft_factor == 1.0 and d.state.calibration_samples == 0  # TTFT here is mostly queueing
    learned = capacity_factor(d.state, current) != 1.0  # 700 ms is off the model's prediction
    assert learned == calibrates or ttft > SPEC.slo.ttft_p95_ms  # a steady breach teaches capacity too


def test_requests_the_router_holds_are_a_queue_the_calibration_does_not_learn_from():
    """Behind the router the workers' queues stay short (it holds what every replica's bound refuses): its queue
    marks a window that is not the steady state all the same."""
    current = plan_at(20.0)
    state = ScalerState(load_history=((85.0, 20.0),))
    calm = obs(100.0, 20.0, ttft=700.0, tpot=20, ready=current.replicas)
    held = replace(calm, router_queued=10.0 * current.replicas)
    assert capacity_factor(autoscale(SPEC, POLICY, current, calm, state, 100.0).state, current) != 1.0
    assert capacity_factor(autoscale(SPEC, POLICY, current, held, state, 100.0).state, current) == 1.0


def test_a_tpot_breach_that_no_queue_signals_still_grows_the_fleet_through_calibration():
    """Decode slower than the model says, batches full but nobody waiting: the reactive path (which needs a
    queue) stays quiet, and the TPOT factor learns from the breach until the plan runs more replicas."""
    rps = 100.0
    current = plan_at(rps)
    o = obs(100.0, rps, ttft=300, ready=current.replicas, window=60.0)
    _, tpot_pred = _predict(SPEC, current, o, ScalerState(), rps / current.replicas)
    slow = replace(o, tpot_p50_ms=3 * tpot_pred, tpot_p95_ms=4 * SPEC.slo.tpot_p95_ms)
    state, plan = ScalerState(), current
    for step in range(1, 9):
        now = 100.0 + 60.0 * step
        d = autoscale(SPEC, POLICY, plan, replace(slow, time=now, ready_replicas=plan.replicas), state, now)
        assert d.slo_met is False
        state, plan = d.state, d.plan
    assert state.tpot_factor > 1.5 and state.ttft_factor == pytest.approx(1.0, abs=0.2)
    assert plan.replicas > current.replicas


def test_rollout_only_when_the_saving_clears_the_threshold():
    current = plan_at(20.0)
    other = replace(current, accelerator="H200", cost_per_hour=current.cost_per_hour * 0.9)

    def fake(saving: float):
        chosen = replace(other, cost_per_hour=current.cost_per_hour * (1 - saving))
        return lambda *a: PlanResult(chosen, (chosen, current), None, 131072)

    o = obs(100.0, 20.0, ttft=300, tpot=20, ready=current.replicas)
    small = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0, plan_fn=fake(0.05))
    assert small.plan.accelerator == current.accelerator and small.action != "rollout"
    big = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0, plan_fn=fake(0.4))
    assert big.action == "rollout" and big.plan.accelerator == "H200"
    assert "predicted saving 40%" in big.reason


def _with_max_batch(c: Candidate, max_batch: int, replicas: int) -> Candidate:
    tiers = tuple(replace(t, max_batch=max_batch, replicas=replicas) for t in c.tiers)
    return replace(c, max_batch=max_batch, replicas=replicas, tiers=tiers)


@pytest.mark.parametrize(
    ("fewer", "retuned"),
    [
        (0, False),  # as many replicas: the running settings stay, no pod restarts for nothing
        (1, True),  # the new settings save a replica: worth restarting the pods for
    ],
)
def test_the_engine_settings_change_only_when_they_save_replicas(fewer: int, retuned: bool):
    current = plan_at(20.0)
    other = 64 if current.max_batch != 64 else 128
    chosen = _with_max_batch(current, other, current.replicas - fewer)
    state = ScalerState(recommendations=((85.0, current.replicas),))
    o = obs(100.0, 20.0, ttft=300, tpot=20, ready=current.replicas)
    d = autoscale(
        SPEC, POLICY, current, o, state, 100.0, plan_fn=lambda *a: PlanResult(chosen, (), None, 131072)
    )
    assert (d.plan.max_batch == other) == retuned
    assert (d.action == "retune") == retuned


def test_engine_settings_an_edited_policy_rules_out_give_way_at_once():
    current = plan_at(20.0)
    window = current.batch_window_ms + 10.0
    edited = POLICY.model_copy(
        update={
            "tier_batch_windows": POLICY.tier_batch_windows.model_copy(
                update={"interactive": WindowRange(min_ms=window, max_ms=window)}
            )
        }
    )
    tiers = tuple(replace(t, batch_window_ms=window) for t in current.tiers)
    chosen = replace(current, batch_window_ms=window, tiers=tiers)
    o = obs(100.0, 20.0, ttft=300, tpot=20, ready=current.replicas)
    d = autoscale(
        SPEC, edited, current, o, ScalerState(), 100.0, plan_fn=lambda *a: PlanResult(chosen, (), None, 1)
    )
    assert d.action == "retune" and d.plan.batch_window_ms == window


def test_a_rollout_sizes_the_new_configuration_by_its_own_plan():
    """Replica counts of one configuration say nothing of another's: a rollout to a TP degree that needs twice
    the replicas at 60% of the cost reports a 40% saving and runs all of them at once, and the old
    configuration's recommendations no longer hold the fleet."""
    current = plan_at(20.0)
    smaller = replace(
        current,
        tensor_parallel=current.tensor_parallel * 2,
        replicas=current.replicas * 2,
        cost_per_hour=current.cost_per_hour * 0.6,
    )
    plan_fn = lambda *a: PlanResult(smaller, (smaller, current), None, 131072)  # noqa: E731
    state = ScalerState(recommendations=((85.0, current.replicas),))
    o = obs(100.0, 20.0, ttft=300, tpot=20, ready=current.replicas)
    d = autoscale(SPEC, POLICY, current, o, state, 100.0, plan_fn=plan_fn)
    assert d.action == "rollout" and d.plan.replicas == smaller.replicas
    assert f"×{smaller.replicas}: predicted saving 40%" in d.reason
    assert d.state.recommendations == ((100.0, smaller.replicas),)


def test_mixed_traffic_splits_tiers_and_idle_windows_keep_the_engine_settings():
    mixed = SPEC.model_copy(
        update={"traffic": SPEC.traffic.model_copy(update={"traffic_class": "mixed", "batch_fraction": 0.5})}
    )
    load = replace(planner.load_from_spec(mixed), rps=40.0)
    current = planner.plan(mixed, load, POLICY).chosen
    assert current is not None and {t.tier for t in current.tiers} == {"interactive", "batch"}
    first = autoscale(mixed, POLICY, current, obs(100.0, 160.0, ready=current.replicas), ScalerState(), 100.0)
    d = autoscale(mixed, POLICY, current, obs(115.0, 160.0, ready=current.replicas), first.state, 115.0)
    assert d.plan.replicas > current.replicas
    assert sum(t.replicas for t in d.plan.tiers) == d.plan.replicas
    assert all(t.replicas >= 1 for t in d.plan.tiers)
    idle = autoscale(SPEC, POLICY, plan_at(40.0), obs(100.0, 0.0, ready=2), ScalerState(), 100.0)
    assert (idle.plan.max_batch, idle.plan.batch_window_ms) == (
        plan_at(40.0).max_batch,
        plan_at(40.0).batch_window_ms,
    )


@pytest.mark.parametrize(
    ("seen", "missed", "last_quiet", "adaptive", "expected"),
    [
        (0.0, 0.0, None, True, 0.2),  # no evidence yet: the prior sits at the aim, full headroom
        (1e6, 0.0, None, True, 0.05),  # a million first tokens, none late: the lowest step, a quarter
        (1e6, 5000.0, None, True, 0.2),  # half the 1% budget spent: the aim, full headroom
        (1e6, 20000.0, None, True, 0.2),  # overspent: never more than the policy's headroom
        (1e6, 1500.0, None, True, 0.1),  # 15% of the budget, 30% of the aim: the second step
        (1e6, 0.0, 3000.0, True, 0.2),  # a quiet gap within the horizon: on/off traffic keeps it all
        (1e6, 7500.0, 3000.0, True, 1 - 0.8**1.5),  # ... and spending 3/4 of its budget raises it
        (1e6, 50000.0, 3000.0, True, 1 - 0.8**2),  # at most to (1 - headroom)² of capacity
        (1e6, 0.0, 3600.0 - BUDGET_HORIZON_S - 1, True, 0.05),  # ... until the gap is an hour old
        (1e6, 0.0, None, False, 0.2),  # adaptiveHeadroom off
    ],
)
def test_headroom_follows_the_error_budget(seen, missed, last_quiet, adaptive, expected):
    policy = SLOPolicySpec(headroom=0.2, adaptive_headroom=adaptive)
    state = ScalerState(slo_seen=seen, slo_missed=missed, last_quiet=last_quiet)
    headroom, spent = budgeted_headroom(SPEC, policy, state, now=3600.0)
    assert headroom == pytest.approx(expected)
    assert spent == pytest.approx((missed + 10) / ((seen + 2000) * 0.01))


def _met(o: Observation, late_share: float) -> Observation:
    seen = o.requests
    return replace(o, ttft_met=(seen * (1 - late_share), seen))


def test_a_service_far_inside_its_slo_plans_fewer_replicas_and_late_tokens_restore_the_headroom():
    rps = 100.0
    current, state = plan_at(rps), ScalerState()
    sizes = []
    for step in range(1, 121):  # 30 minutes, every first token on time
        now = 15.0 * step
        o = _met(obs(now, rps, ready=current.replicas), 0.0)
        d = autoscale(SPEC, POLICY, current, o, state, now, plan_fn=MEMO)
        current, state = d.plan, d.state
        sizes.append(current.replicas)
    full = plan_at(
        1.05 ** math.ceil(math.log(rps) / math.log(1.05))
    ).replicas  # the whole headroom, on the grid
    assert sizes[-1] < full
    assert "of the TTFT error budget spent" in d.reason
    for later in (now + 15.0, now + 30.0):  # windows of late first tokens: the up window takes two to agree
        late = _met(obs(later, rps, ready=current.replicas), 1.0)
        d = autoscale(SPEC, POLICY, current, late, state, later, plan_fn=MEMO)
        current, state = d.plan, d.state
        assert budgeted_headroom(SPEC, POLICY, d.state, later)[0] == POLICY.headroom
    assert d.plan.replicas == full


def test_overlapping_query_windows_count_each_first_token_once():
    # a minute of increase() read every 15 s: each window adds a quarter of what it holds
    current = plan_at(10.0)
    state = ScalerState()
    for step in range(1, 41):
        now = 15.0 * step
        o = replace(obs(now, 10.0, ready=current.replicas, window=60.0), ttft_met=(570.0, 600.0))
        state = autoscale(SPEC, POLICY, current, o, state, now, plan_fn=MEMO).state
    decay = math.exp(-15.0 / BUDGET_HORIZON_S)
    served = sum(150.0 * decay**k for k in range(40))  # 10 rps for 15 s per interval, decayed
    assert state.slo_seen == pytest.approx(served)
    assert state.slo_missed == pytest.approx(served * 0.05)


@pytest.mark.parametrize(
    ("workers_ttft", "router_ttft", "scales", "reason"),
    [
        # the workers are on time, but requests wait in the router: the clients' TTFT breaches, so it scales
        (400.0, 2500.0, True, "TTFT p95 at the router 2500 ms > 1000 ms"),
        (400.0, None, False, ""),  # no router data: the workers' TTFT, on time
        (2500.0, None, True, "TTFT p95 2500 ms > 1000 ms"),  # no router data: the workers' TTFT breaches
        (2500.0, 600.0, False, ""),  # the clients' TTFT decides, not the workers'
    ],
)
def test_behind_a_router_the_breach_is_the_ttft_clients_see(workers_ttft, router_ttft, scales, reason):
    current = plan_at(10.0)
    o = replace(
        obs(100.0, 10.0, ttft=workers_ttft, tpot=20, ready=current.replicas),
        router_queued=20.0,
        router_ttft_p95_ms=router_ttft,
    )
    d = autoscale(SPEC, POLICY, current, o, ScalerState(), 100.0)
    assert (d.plan.replicas > current.replicas) is scales, d.reason
    assert d.slo_met is not scales
    if scales:
        assert d.reason.startswith(f"scaled interactive {current.replicas}→{d.plan.replicas}: {reason}")


@pytest.mark.parametrize(
    ("workers_met", "router_met", "missed"),
    [((150.0, 150.0), (75.0, 150.0), 75.0), ((150.0, 150.0), None, 0.0), ((75.0, 150.0), None, 75.0)],
)
def test_the_error_budget_spends_the_first_tokens_clients_see_late(workers_met, router_met, missed):
    current = plan_at(10.0)
    o = replace(obs(15.0, 10.0, ready=current.replicas), ttft_met=workers_met, router_ttft_met=router_met)
    state = autoscale(SPEC, POLICY, current, o, ScalerState(), 15.0, plan_fn=MEMO).state
    assert (state.slo_seen, state.slo_missed) == pytest.approx((150.0, missed))
