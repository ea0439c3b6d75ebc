"""The simulator on hand-checkable cases; baselines on scripted metric sequences; the oracle as a bound."""

import numpy as np
import pytest

from goodput.policies.baselines import HPA, KEDA, HPABehavior, Schedule, Static, oracle
from goodput.policies.catalog import accelerator
from goodput.policies.perfmodel import StepModel, step_seconds
from goodput.policies.profiles import PRESETS
from goodput.policies.simulator import (
    Actuation,
    EngineConfig,
    FleetView,
    SimConfig,
    SLOTarget,
    StepProfile,
    simulate,
)
from goodput.policies.types import Observation
from goodput.policies.workloads import Trace

# weights 10 ms per step, 1 ms of compute per token, no KV cost: a step of n decodes and c prefill tokens takes
# max(10 ms, (n + c) ms)
PROFILE = StepProfile(
    weights_s=0.010, kv_s_per_token=0.0, compute_s_per_token=0.001, overhead_s=0.0, kv_capacity_tokens=10**6
)


def _cfg(**kw) -> SimConfig:
    base = dict(
        profile=PROFILE,
        engine=EngineConfig(max_batch=8, batch_window_s=0.0, chunk_tokens=1000),
        slo=SLOTarget(ttft_ms=150, tpot_ms=20),
        start_delay_s=30.0,
        interval_s=15.0,
        initial_replicas=1,
    )
    base.update(kw)
    return SimConfig(**base)


def _trace(arrivals, prompt=100, output=5) -> Trace:
    n = len(arrivals)
    return Trace("t", np.asarray(arrivals, float), np.full(n, prompt), np.full(n, output))


def test_single_replica_by_hand():
    # request alone: prefill 100 tokens = 100 ms, then 4 decode steps of 10 ms
    # two together at t=20: one 200-token prefill step (200 ms), then 4 decode steps of max(10, 2) ms
    res = simulate(_trace([0.0, 10.0, 20.0, 20.0]), Static(1), _cfg())
    assert res.ttft_ms == pytest.approx([100, 100, 200, 200])
    assert res.tpot_ms == pytest.approx([10, 10, 10, 10])
    assert res.ok.tolist() == [True, True, False, False]  # 200 ms > 150 ms TTFT target
    assert res.attainment == 0.5


def test_batch_window_and_chunking_by_hand():
    cfg = _cfg(engine=EngineConfig(max_batch=8, batch_window_s=0.005, chunk_tokens=60))
    res = simulate(_trace([0.0], prompt=100, output=3), Static(1), cfg)
    # 5 ms window, then chunks of 60 and 40 tokens (60 ms + 40 ms), then 2 decode steps of 10 ms
    assert res.ttft_ms[0] == pytest.approx(105)
    assert res.tpot_ms[0] == pytest.approx(10)


def test_decode_interference_and_queueing_by_hand():
    # second request arrives while the first decodes: its prefill step (100 decode+prefill tokens) slows the
    # first request's token to 101 ms
    res = simulate(_trace([0.0, 0.12], prompt=100, output=5), Static(1), _cfg())
    assert res.ttft_ms[0] == pytest.approx(100)
    # the first request decodes at 0.10-0.11 and 0.11-0.12; the second joins the step starting at 0.12
    assert res.ttft_ms[1] == pytest.approx(101)
    assert res.tpot_ms[0] == pytest.approx((10 + 10 + 101 + 10) / 4)


def test_gpu_hours_and_start_delay():
    trace = _trace(np.arange(0, 3600, 10.0))
    res = simulate(trace, Static(2), _cfg(initial_replicas=2))
    assert res.gpu_hours == pytest.approx(2 * trace.duration_s / 3600, rel=0.01)
    # scaling 1 -> 2 at the first interval bills the second pod from its creation, including its start delay
    res = simulate(trace, Static(2), _cfg(initial_replicas=1))
    assert res.gpu_hours == pytest.approx((trace.duration_s + trace.duration_s - 15) / 3600, rel=0.01)
    assert res.scale_events == 1


def test_requests_wait_for_a_ready_pod():
    res = simulate(_trace([20.0]), Schedule(np.array([0, 1, 1, 1, 1]), 15.0, 30.0), _cfg(initial_replicas=0))
    # the pod requested at t=15 is ready at t=45: the request waits 25 s
    assert res.ttft_ms[0] == pytest.approx(25_000 + 100, rel=0.01)


def _obs(t, running=None, waiting=None, ready=2):
    return Observation(
        time=t, window_s=15, rps=1.0, requests=15, ttft_p95_ms=None, tpot_p95_ms=None,
        kv_cache_usage=None, queue_depth=waiting, running=running, ready_replicas=ready,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("running", "ready", "starting", "desired", "expected"),
    [
        (40, 2, 0, 2, 4),  # ratio 2: double
        (21, 2, 0, 2, 2),  # ratio 1.05 within the 10% tolerance
        (200, 2, 0, 2, 6),  # +4 pods beats +100% from 2
        (400, 10, 0, 10, 20),  # +100% beats +4 pods from 10
        (30, 2, 2, 4, 4),  # with 2 pods starting at 0 usage the ratio falls to 0.75: no scale-up
        (60, 2, 2, 4, 6),  # with starting pods counted: 60 / (10 * 4) = 1.5 -> 6
    ],
)
def test_hpa_scale_up_rules(running, ready, starting, desired, expected):
    hpa = HPA(target=10)
    act = hpa.decide(15.0, _obs(15.0, running=running, ready=ready), FleetView(desired, ready, starting))
    assert act.replicas == expected


def test_hpa_scale_down_waits_300s_and_syncs_every_15s():
    hpa = HPA(target=10)
    assert hpa.decide(0.0, _obs(0.0, running=80, ready=4), FleetView(4, 4, 0)).replicas == 8
    fleet = FleetView(8, 8, 0)
    for t in np.arange(15.0, 300.0, 15.0):
        assert hpa.decide(t, _obs(t, running=10, ready=8), fleet).replicas == 8
    assert hpa.decide(300.0, _obs(300.0, running=10, ready=8), fleet).replicas == 1
    # between syncs nothing changes
    hpa2 = HPA(target=10)
    hpa2.decide(0.0, _obs(0.0, running=20, ready=2), FleetView(2, 2, 0))
    assert hpa2.decide(5.0, _obs(5.0, running=100, ready=2), FleetView(2, 2, 0)).replicas == 2


def test_hpa_on_kv_usage():
    obs = Observation(
        0, 15, 1, 15, None, None, kv_cache_usage=0.9, queue_depth=0, running=0, ready_replicas=3
    )
    assert HPA(target=0.6, metric="kv").decide(0.0, obs, FleetView(3, 3, 0)).replicas == 5  # ceil(3 * 1.5)


def test_keda_average_value_on_waiting():
    keda = KEDA(threshold=5)
    assert keda.decide(0.0, _obs(0.0, waiting=25, ready=1), FleetView(1, 1, 0)).replicas == 5
    # queue drained: the recommendation is 0 -> minReplicaCount 1, but only after 300 s of stabilization
    fleet = FleetView(5, 5, 0)
    assert keda.decide(150.0, _obs(150.0, waiting=0, ready=5), fleet).replicas == 5
    assert keda.decide(315.0, _obs(315.0, waiting=0, ready=5), fleet).replicas == 1


def test_keda_scale_to_zero_and_activation():
    keda = KEDA(
        threshold=5, min_replicas=0, cooldown_s=300, behavior=HPABehavior(scale_down_stabilization_s=0)
    )
    idle = _obs(0.0, running=0, waiting=0, ready=1)
    assert keda.decide(0.0, idle, FleetView(1, 1, 0)).replicas == 1  # last activity unknown -> now
    assert keda.decide(300.0, _obs(300.0, running=0, waiting=0, ready=1), FleetView(1, 1, 0)).replicas == 0
    assert keda.decide(315.0, _obs(315.0, running=0, waiting=0, ready=0), FleetView(0, 0, 0)).replicas == 0
    assert keda.decide(330.0, _obs(330.0, running=0, waiting=3, ready=0), FleetView(0, 0, 0)).replicas == 1


def test_missing_metrics_hold_baselines():
    assert HPA(target=10).decide(0.0, None, FleetView(3, 3, 0)).replicas == 3
    assert KEDA(threshold=5).decide(0.0, None, FleetView(3, 3, 0)).replicas == 3


def test_oracle_is_a_bound():
    rng = np.random.default_rng(1)
    # a quiet hour with two one-minute bursts
    base = np.sort(rng.uniform(0, 1800, 600))
    bursts = np.sort(np.r_[rng.uniform(400, 460, 1500), rng.uniform(1200, 1260, 1500)])
    trace = _trace(np.sort(np.r_[base, bursts]), prompt=100, output=5)
    cfg = _cfg(slo=SLOTarget(ttft_ms=1000, tpot_ms=150, attainment=0.99))
    capacity = 1.0 / (100 * PROFILE.compute_s_per_token + 4 * PROFILE.weights_s / 4)
    best, need = oracle(trace, cfg, capacity_rps=capacity)
    assert best.attainment >= 0.99
    others = [simulate(trace, Static(n), cfg) for n in (1, 2, 3, 4)] + [
        simulate(trace, HPA(target=t), cfg) for t in (1, 2, 4)
    ]
    for r in others:
        if r.attainment >= best.attainment:
            assert best.gpu_hours <= r.gpu_hours
    assert need.max() > need.min()  # it follows the bursts


def test_oracle_is_no_costlier_than_sizing_every_interval_alike():
    rng = np.random.default_rng(2)
    # a smooth ramp: 2 to 14 requests per second over 20 minutes, Poisson arrivals
    t = np.linspace(0, 1200, 1201)
    rate = 2 + 12 * t / 1200
    arrivals = np.sort(
        np.concatenate([rng.uniform(a, a + 1, rng.poisson(r)) for a, r in zip(t, rate, strict=True)])
    )
    trace = _trace(arrivals, prompt=100, output=5)
    cfg = _cfg(slo=SLOTarget(ttft_ms=1000, tpot_ms=150, attainment=0.99))
    capacity = 1.0 / (100 * PROFILE.compute_s_per_token + 4 * PROFILE.weights_s / 4)
    best, _ = oracle(trace, cfg, capacity_rps=capacity)
    assert best.attainment >= 0.99
    per_interval = np.bincount((arrivals // 15).astype(int)) / 15
    for share in (0.3, 0.4, 0.45):
        need = np.maximum(np.ceil(per_interval / (share * capacity)).astype(int), 1)
        schedule = Schedule(need, cfg.interval_s, cfg.start_delay_s)
        first = schedule.decide(0.0, None, FleetView(0, 0, 0)).replicas
        uniform = simulate(trace, schedule, _cfg(**{**cfg.__dict__, "initial_replicas": first}))
        if uniform.attainment >= 0.99:
            assert best.gpu_hours <= uniform.gpu_hours + 1e-9


def test_a_long_prompt_costs_what_the_performance_model_says():
    """The simulator's step is the performance model's: each chunk's attention at its real context, so a lone
    prompt's TTFT is the model's chunked prefill time (16k tokens: more than 32 chunks at one chunk's context)."""
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    cfg = _cfg(
        profile=StepProfile.from_model(model, 8, 512),
        engine=EngineConfig(max_batch=8, batch_window_s=0.0, chunk_tokens=512),
    )
    res = simulate(_trace([0.0], prompt=16384, output=1), Static(1), cfg)
    assert res.ttft_ms[0] == pytest.approx(1000 * float(model.prefill_time(16384, 512)), rel=1e-9)
    first_chunk_context = 1000 * 32 * float(model.step_time(0, 512, 0, 256))
    assert res.ttft_ms[0] > 1.2 * first_chunk_context  # 28% more on average over 32 chunks


def test_decode_fast_forward_sums_the_step_formula_across_its_roofline_crossover():
    """Memory and compute both grow with the context at different slopes; the closed-form run of decode steps
    equals stepping `step_seconds` one token at a time through the point where memory overtakes compute."""
    profile = StepProfile(
        weights_s=0.001,
        kv_s_per_token=1e-6,
        compute_s_per_token=0.005,
        overhead_s=0.0005,
        kv_capacity_tokens=10**6,
        prefill_compute_s_per_token=1e-5,
        attention_s_per_context=1e-7,
    )
    prompt, output = 4000, 1000
    res = simulate(_trace([0.0], prompt=prompt, output=output), Static(1), _cfg(profile=profile))
    decode = sum(float(step_seconds(profile.cost, 1, 0, prompt + 1 + j, 0.0)) for j in range(output - 1))
    first_token = res.ttft_ms[0] / 1000
    chunks = [(k * 1000, 1000) for k in range(prompt // 1000)]  # the engine's 1,000-token chunks
    prefill = sum(float(step_seconds(profile.cost, 0, c, 0, c * (start + c / 2))) for start, c in chunks)
    assert first_token == pytest.approx(prefill, rel=1e-9)
    assert res.tpot_ms[0] * (output - 1) / 1000 == pytest.approx(decode, rel=1e-9)


class _Recorder:
    """Keeps every observation it is shown; never scales."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Observation | None] = []

    def decide(self, now, obs, fleet):
        self.seen.append(obs)
        return Actuation(fleet.desired)


def test_each_observation_covers_the_operator_s_window_of_intervals():
    # 30 requests in the first interval, then 3 in the sixth: a 45 s window sees each interval three times
    recorder = _Recorder()
    arrivals = [0.1 * i for i in range(30)] + [80.0, 81.0, 82.0, 130.0]
    simulate(_trace(arrivals), recorder, _cfg(window_s=45.0))
    counts = [obs.rps * obs.window_s if obs else 0.0 for obs in recorder.seen[:8]]
    assert counts == pytest.approx([30, 30, 30, 0, 0, 3, 3, 3])
    assert [obs.window_s for obs in recorder.seen[:4]] == [15.0, 30.0, 45.0, 45.0]


def test_a_window_shorter_than_the_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        _cfg(window_s=5.0)
