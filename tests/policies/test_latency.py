"""The p95 predictor against the discrete-event simulation of the same engine, and its basic shape."""

import numpy as np
import pytest

from goodput.policies.catalog import accelerator
from goodput.policies.latency import ReplicaPredictor, TokenStats
from goodput.policies.perfmodel import StepModel
from goodput.policies.planner import lognormal_samples
from goodput.policies.profiles import PRESETS
from goodput.policies.replica_sim import SimResult, simulate_replica

MAX_BATCH, WINDOW_S, CHUNK = 256, 0.005, 512


@pytest.fixture(scope="module")
def chat():
    """Llama-3-8B on one H100 with chat traffic: prompts p50/p95 1000/4000, outputs 200/600."""
    prompts = lognormal_samples(1000, 4000)
    outputs = np.random.default_rng(0).permutation(lognormal_samples(200, 600))
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    predictor = ReplicaPredictor(model, TokenStats.from_samples(prompts, outputs), CHUNK, MAX_BATCH)
    return model, predictor, prompts, outputs


@pytest.mark.parametrize(("utilisation", "requests"), [(0.3, 5000), (0.6, 10000), (0.9, 20000)])
def test_predicted_p95s_agree_with_the_discrete_event_simulation(chat, utilisation, requests):
    model, predictor, prompts, outputs = chat
    batch = np.array([MAX_BATCH])
    rate = float(predictor.rate_at_utilisation(utilisation, batch)[0])
    predicted = predictor.predict(np.array([[rate]]), batch, np.array([WINDOW_S]))
    assert float(predicted.utilisation[0, 0]) == pytest.approx(utilisation, abs=0.01)
    runs = [
        simulate_replica(model, rate, prompts, outputs, MAX_BATCH, WINDOW_S, CHUNK, requests, seed)
        for seed in (0, 1)
    ]
    ttft = np.mean([r.ttft_quantile(0.95) for r in runs])
    tpot = np.mean([r.tpot_quantile(0.95) for r in runs])
    assert float(predicted.ttft[0, 0, 0]) == pytest.approx(ttft, rel=0.10)
    assert float(predicted.tpot[0, 0]) == pytest.approx(tpot, rel=0.10)


def test_tails_grow_with_load_and_window(chat):
    _, predictor, _, _ = chat
    batches = np.array([64, 256])
    rates = predictor.saturation_rps(batches)[:, None] * np.linspace(0.05, 0.95, 12)[None, :]
    p = predictor.predict(rates, batches, np.array([0.002, 0.040]))
    assert np.all(np.diff(p.ttft, axis=-1) >= -1e-9)
    assert np.all(np.diff(p.tpot, axis=-1) >= -1e-9)
    assert np.all(p.ttft[:, 1, :] > p.ttft[:, 0, :])  # a longer batch window delays the first token
    assert np.all(np.diff(p.utilisation, axis=-1) > 0)


def test_overload_is_infinite_not_optimistic(chat):
    _, predictor, _, _ = chat
    batch = np.array([64])
    beyond = predictor.saturation_rps(batch)[:, None] * 1.5
    p = predictor.predict(beyond, batch, np.array([0.005]))
    assert np.isinf(p.ttft).all() and np.isinf(p.tpot).all()


def test_higher_quantile_is_higher(chat):
    _, predictor, _, _ = chat
    batch = np.array([128])
    rate = predictor.rate_at_utilisation(0.5, batch)[:, None]
    p95 = predictor.predict(rate, batch, np.array([0.005]), 0.95, 0.95)
    p99 = predictor.predict(rate, batch, np.array([0.005]), 0.99, 0.99)
    assert float(p99.ttft[0, 0, 0]) > float(p95.ttft[0, 0, 0])
    assert float(p99.tpot[0, 0]) >= float(p95.tpot[0, 0])


def test_simulation_is_reproducible_with_common_random_numbers(chat):
    model, _, prompts, outputs = chat
    a = simulate_replica(model, 5.0, prompts, outputs, 64, WINDOW_S, CHUNK, requests=400, seed=3)
    b = simulate_replica(model, 5.0, prompts, outputs, 64, WINDOW_S, CHUNK, requests=400, seed=3)
    faster = simulate_replica(model, 10.0, prompts, outputs, 64, WINDOW_S, CHUNK, requests=400, seed=3)
    np.testing.assert_array_equal(a.ttft, b.ttft)
    # Same arrivals scaled in time: a higher rate never shortens the queue.
    assert faster.ttft_quantile(0.95) >= a.ttft_quantile(0.95)


def test_simulated_ttft_includes_window_and_prefill():
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    prompts, outputs = np.array([1000]), np.array([5])
    result = simulate_replica(model, 0.01, prompts, outputs, 8, 0.02, 512, requests=20, warmup=0.0)
    alone = float(model.prefill_time(1000, 512))
    np.testing.assert_allclose(result.ttft, 0.02 + alone, rtol=1e-4)  # idle engine: window, then two chunks
    np.testing.assert_allclose(result.step_durations, float(model.step_time(1, 0.0, 1001.0)), rtol=0.01)


def test_tpot_quantile_weights_steps_by_tokens():
    result = SimResult(np.zeros(1), np.array([0.010, 0.050]), np.array([99.0, 1.0]))
    assert result.tpot_quantile(0.95) == 0.010  # 99% of the tokens came from the fast step
    assert result.tpot_quantile(0.995) == 0.050


def test_token_statistics_do_not_pair_prompts_with_outputs():
    """Histogram quantile nodes come sorted: read as pairs, each long prompt would meet a long output and the
    KV a decoding sequence holds would be the size-biased prompt mean. The statistics take the two lengths as
    independent, so sorted nodes and shuffled samples of the same lengths predict alike."""
    prompts = lognormal_samples(1000, 4000)
    outputs = lognormal_samples(130, 500)
    sorted_pairs = TokenStats.from_samples(np.sort(prompts), np.sort(outputs))
    shuffled = TokenStats.from_samples(prompts, np.random.default_rng(1).permutation(outputs))
    assert sorted_pairs.decode_context == pytest.approx(shuffled.decode_context)
    decoded = outputs - 1.0
    half_output = float((decoded * outputs / 2).sum() / decoded.sum())
    assert sorted_pairs.decode_context == pytest.approx(prompts.mean() + half_output)
