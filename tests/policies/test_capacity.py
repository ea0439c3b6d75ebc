"""The learned capacity converges to what a replica really carries at the SLO, whichever way the model errs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.calibration import calibrate
from goodput.policies.capacity import MAX_STEP, capacity_factor, configuration, learn_capacity, prove_load
from goodput.policies.catalog import accelerator
from goodput.policies.latency import ReplicaPredictor, TokenStats
from goodput.policies.perfmodel import StepModel
from goodput.policies.profiles import profile_for
from goodput.policies.types import Candidate, Observation, ScalerState
from testkit.specs import llama_h100

SPEC = llama_h100(expected_rps=40)
POLICY = SLOPolicySpec()
CHAT = ((1000.0, 4000.0), (130.0, 500.0))
CODE = ((1500.0, 7300.0), (13.0, 90.0))  # code completion: longer prompts, short outputs
WINDOW_S = 15.0


def _running() -> Candidate:
    chosen = planner.plan(SPEC, planner.load_from_spec(SPEC), POLICY, 1.0, 1.0).chosen
    assert chosen is not None
    return chosen


def _mix(mix: tuple[tuple[float, float], tuple[float, float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    (p50, p95), (o50, o95) = mix
    return (
        tuple(float(x) for x in planner.lognormal_samples(p50, p95, 64)),
        tuple(float(x) for x in planner.lognormal_samples(o50, o95, 64)),
    )


class Replica:
    """A replica as the model sees it with calibration `factors`, at a given token mix; the truth when
    `rate_scale` ≠ 1: it carries that many times the model's load at the same latency (its knee is elsewhere,
    its unloaded latency is the model's, so no latency factor can express the difference)."""

    def __init__(
        self,
        c: Candidate,
        nodes: tuple[tuple[float, ...], tuple[float, ...]],
        factors: tuple[float, float] = (1.0, 1.0),
        rate_scale: float = 1.0,
    ) -> None:
        model = StepModel(profile_for(SPEC.model), accelerator(c.accelerator), c.tensor_parallel, *factors)
        self.c, self.rate_scale = c, rate_scale
        self.predictor = ReplicaPredictor(
            model,
            TokenStats.from_samples(np.array(nodes[0]), np.array(nodes[1])),
            c.chunk_tokens,
            c.max_batch,
        )

    def ttft_p95_ms(self, rps: float) -> float:
        return self.observe(rps)[0]

    def observe(self, rps: float) -> tuple[float, float]:
        """TTFT p95 and inter-token median (ms) at `rps` per replica; overload reads as a very late TTFT."""
        p = self.predictor.predict(
            np.array([[rps / self.rate_scale]]),
            np.array([self.c.max_batch]),
            np.array([self.c.batch_window_ms / 1000.0]),
            tpot_quantile=0.5,
        )
        ttft, tpot = float(p.ttft.ravel()[0]) * 1000.0, float(p.tpot.ravel()[0]) * 1000.0
        return (ttft if math.isfinite(ttft) else 1e7), (tpot if math.isfinite(tpot) else 1e4)

    def capacity_at_slo(self) -> float:
        """The per-replica rate at which TTFT p95 reaches the SLO's target (bisection)."""
        low = 0.0
        high = self.rate_scale * float(self.predictor.saturation_rps(np.array([self.c.max_batch]))[0])
        for _ in range(30):
            mid = (low + high) / 2
            low, high = (mid, high) if self.ttft_p95_ms(mid) <= 1000.0 else (low, mid)
        return low


def _believed(state: ScalerState, c: Candidate, nodes: tuple[tuple[float, ...], tuple[float, ...]]) -> float:
    """The per-replica rate the autoscaler believes meets the SLO: its calibrated model's, times the factor."""
    model = Replica(c, nodes, (state.ttft_factor, state.tpot_factor))
    return capacity_factor(state, c) * model.capacity_at_slo()


def _learn(state: ScalerState, truth: Replica, windows: int, start: float = 0.0) -> ScalerState:
    """Windows at the load a planner with 20 % headroom gives each replica, from what it has learned so far;
    calibration and capacity learning both run, as in `autoscale`."""
    nodes = (state.prompt_tokens_nodes, state.output_tokens_nodes)
    assert nodes[0] is not None and nodes[1] is not None
    for i in range(windows):
        rps = 0.8 * _believed(state, truth.c, (nodes[0], nodes[1]))
        ttft, tpot = truth.observe(rps)
        obs = Observation(
            time=start + (i + 1) * WINDOW_S, window_s=WINDOW_S, rps=rps * 10, requests=rps * 10 * WINDOW_S,
            ttft_p95_ms=ttft, tpot_p95_ms=None, kv_cache_usage=None, queue_depth=0.0, running=None,
            ready_replicas=10, prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1], tpot_p50_ms=tpot,
        )  # fmt: skip
        state = calibrate(SPEC, POLICY, truth.c, obs, state, 1000.0)
        state = learn_capacity(SPEC, POLICY, truth.c, obs, state)
        state = prove_load(POLICY, truth.c, obs, state, ttft <= 1000.0, obs.rps)
        state = replace(state, load_history=((obs.time, obs.rps),))
    return state


@pytest.mark.parametrize("rate_scale", [0.5, 2.0])  # true capacity half, and twice, the model's
def test_converges_on_a_replica_carrying_half_or_twice_what_the_model_says(rate_scale: float) -> None:
    c = _running()
    nodes = _mix(CHAT)
    state = ScalerState(prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1])
    truth = Replica(c, nodes, rate_scale=rate_scale)
    assert _believed(state, c, nodes) == pytest.approx(truth.capacity_at_slo() / rate_scale, rel=0.01)
    state = _learn(state, truth, windows=20)  # five minutes of 15 s windows
    assert _believed(state, c, nodes) == pytest.approx(truth.capacity_at_slo(), rel=0.15)


def test_a_step_in_the_token_mix_reconverges() -> None:
    """The model errs one way on chat and the other on code completion: the factor follows the mix."""
    c = _running()
    chat, code = _mix(CHAT), _mix(CODE)
    state = ScalerState(prompt_tokens_nodes=chat[0], output_tokens_nodes=chat[1])
    state = _learn(state, Replica(c, chat, rate_scale=2.0), windows=20)
    truth = Replica(c, code, rate_scale=0.6)
    state = replace(state, prompt_tokens_nodes=code[0], output_tokens_nodes=code[1])
    state = _learn(state, truth, windows=20, start=1000.0)
    assert _believed(state, c, code) == pytest.approx(truth.capacity_at_slo(), rel=0.15)


def test_a_window_that_says_nothing_leaves_the_factor_alone() -> None:
    c = _running()
    nodes = _mix(CHAT)
    state = ScalerState(
        prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1], capacity=((configuration(c), 1.5, 3),)
    )
    quiet = Observation(
        time=15.0, window_s=WINDOW_S, rps=0.1, requests=1.0, ttft_p95_ms=200.0, tpot_p95_ms=None,
        kv_cache_usage=None, queue_depth=0.0, running=None, ready_replicas=1,
    )  # fmt: skip
    assert learn_capacity(SPEC, POLICY, c, quiet, state) == state  # too few requests to learn from


def _proving(requests: float, ttft_ms: float | None = 400.0) -> Observation:
    """A 15 s window on 2 replicas, at 5 rps each."""
    return Observation(
        time=15.0, window_s=WINDOW_S, rps=10.0, requests=requests, ttft_p95_ms=ttft_ms, tpot_p95_ms=None,
        kv_cache_usage=None, queue_depth=0.0, running=None, ready_replicas=2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("windows", "proven"),
    [
        ([(12.0, 180.0, True)], 12.0),  # enough requests, planned above what was proven: the new highest
        ([(8.0, 120.0, True)], 10.0),  # below it: the highest stays
        ([(12.0, 30.0, True)], 10.0),  # too few requests for a p95 to say the SLO was met
        ([(12.0, 30.0, True), (11.0, 30.0, True)], 12.0),  # a streak of sparse windows: its busiest
        ([(12.0, 30.0, True), (11.0, 30.0, False), (11.0, 30.0, True)], 10.0),  # a miss breaks the streak
    ],
)
def test_a_streak_within_the_slo_proves_the_busiest_load_it_was_planned_for(
    windows: list[tuple[float, float, bool]], proven: float
) -> None:
    """Per replica, the load the plan was made for (not the window's 5 rps): a plan is held against it."""
    c = _running()
    state = ScalerState(proven=((configuration(c), 10.0),))
    for planned_per_replica, requests, met in windows:
        state = prove_load(POLICY, c, _proving(requests), state, met, planned_per_replica * 2)
    assert dict(state.proven)[configuration(c)] == proven


def test_a_window_without_a_ttft_proves_nothing() -> None:
    c = _running()
    state = prove_load(POLICY, c, _proving(180.0, ttft_ms=None), ScalerState(), True, 24.0)
    assert state.proven == ()


def test_a_restart_keeps_what_was_learned() -> None:
    """The learned factors go to status.calibration and come back: a restarted operator plans the same."""
    from goodput.controllers import status
    from goodput.crds.inferenceservice import InferenceServiceStatus

    c = _running()
    nodes = _mix(CHAT)
    state = ScalerState(prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1])
    state = _learn(state, Replica(c, nodes, rate_scale=2.0), windows=8)
    assert capacity_factor(state, c) > 1.2
    wire = {"calibration": status.calibration_status(state, 1000.0), "scaler": status.scaler_status(state)}
    InferenceServiceStatus.model_validate(wire)  # what the CRD schema admits
    restored = status.state_from_status(wire)
    assert restored.capacity == state.capacity
    assert restored.proven == state.proven and state.proven  # the replica carried the load within the SLO
    assert capacity_factor(restored, c) == capacity_factor(state, c)


def _window(
    rps: float, ttft_ms: float, nodes: tuple[tuple[float, ...], tuple[float, ...]], **kw: float
) -> Observation:
    """A 15 s window of 10 replicas, each at `rps`, that served prompts and outputs of `nodes`."""
    return Observation(
        time=15.0, window_s=WINDOW_S, rps=rps * 10, requests=rps * 10 * WINDOW_S, ttft_p95_ms=ttft_ms,
        tpot_p95_ms=None, kv_cache_usage=None, queue_depth=kw.get("queue_depth", 0.0), running=None,
        ready_replicas=10, prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1],
    )  # fmt: skip


def _raw_factor(state: ScalerState) -> float:
    """The one configuration's learned factor, off the planning grid."""
    ((_, factor, _),) = state.capacity
    return factor


def test_a_window_of_long_prompts_is_judged_at_its_own_mix() -> None:
    """A window that served longer prompts than the service's usual mix is slower for that, not because the
    knee moved: compared with the model at the smoothed chat mix it would lower the factor."""
    c = _running()
    chat, code = _mix(CHAT), _mix(CODE)
    state = ScalerState(prompt_tokens_nodes=chat[0], output_tokens_nodes=chat[1])
    truth = Replica(c, code)  # the model is right: the window's latency is its prompts'
    rps = 0.9 * truth.capacity_at_slo()
    ttft = truth.ttft_p95_ms(rps)
    assert Replica(c, chat).ttft_p95_ms(rps) < 500.0 < ttft <= 1000.0  # near the target, the model's at chat
    learned = learn_capacity(SPEC, POLICY, c, _window(rps, ttft, code), state)
    assert _raw_factor(learned) == pytest.approx(1.0, abs=0.01)  # the mix's nodes are rounded to share plans
    assert _raw_factor(learn_capacity(SPEC, POLICY, c, _window(rps, ttft, chat), state)) < 0.95


def test_one_window_moves_the_factor_by_at_most_a_step() -> None:
    """One window far past the target (a burst of the longest prompts) nudges the factor; only evidence that
    repeats moves it far. A window whose requests queue is a transient and teaches nothing."""
    c = _running()
    nodes = _mix(CHAT)
    state = ScalerState(prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1])
    rps = 0.3 * Replica(c, nodes).capacity_at_slo()  # at this rate the model is far from such a latency
    once = learn_capacity(SPEC, POLICY, c, _window(rps, 60_000.0, nodes), state)
    assert _raw_factor(once) == pytest.approx(1 / MAX_STEP)
    queued = learn_capacity(SPEC, POLICY, c, _window(rps, 60_000.0, nodes, queue_depth=40.0), state)
    assert queued == state


def test_the_factor_does_not_rise_while_the_error_budget_is_overspent() -> None:
    """Windows with a queue teach nothing, and they are where a heavy-tailed mix misses its SLO: the calm
    windows that are left all say a replica carries more. While the hour's misses exceed what the SLO allows,
    their word is not taken; within the budget it is."""
    c = _running()
    nodes = _mix(CHAT)
    truth = Replica(c, nodes, rate_scale=2.0)  # a replica carries twice the model's load
    rps = 0.9 * truth.capacity_at_slo()
    calm = _window(rps, truth.ttft_p95_ms(rps), nodes)
    within = ScalerState(prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1], slo_seen=20_000.0)
    assert _raw_factor(learn_capacity(SPEC, POLICY, c, calm, within)) > 1.05
    overspent = replace(within, slo_missed=400.0)  # 2 % late against the 1 % the SLO allows
    assert learn_capacity(SPEC, POLICY, c, calm, overspent) == overspent


def test_behind_a_router_the_factor_is_learned_from_the_ttft_clients_see() -> None:
    """The router holds what every replica's bound refuses, so the workers' TTFT starts after its queue: a
    window whose workers look twice as fast as the model, while the clients' first tokens are as slow as the
    model says, teaches nothing about carrying more (the SLO is on what the clients see)."""
    c = _running()
    nodes = _mix(CHAT)
    fast = Replica(c, nodes, rate_scale=2.0)
    rps = 0.9 * fast.capacity_at_slo() / 2.0
    workers = _window(rps, fast.ttft_p95_ms(rps), nodes)
    state = ScalerState(prompt_tokens_nodes=nodes[0], output_tokens_nodes=nodes[1], slo_seen=20_000.0)
    assert _raw_factor(learn_capacity(SPEC, POLICY, c, workers, state)) > 1.05  # the workers alone say so
    routed = replace(workers, router_ttft_p95_ms=Replica(c, nodes).ttft_p95_ms(rps))
    assert _raw_factor(learn_capacity(SPEC, POLICY, c, routed, state)) == pytest.approx(1.0, abs=0.02)
