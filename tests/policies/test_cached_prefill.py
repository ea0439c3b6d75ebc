"""The prefix cache's share of prompt tokens: observed from the workers' counters, averaged with the token mix,
and discounted from the prefill compute (never from the KV) that the planner and the calibration predict."""

from dataclasses import replace

import numpy as np
import pytest

from goodput.crds.inferenceservice import Tier
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.cached_prefill import planned_share, token_stats
from goodput.policies.calibration import running_predictor
from goodput.policies.catalog import accelerator
from goodput.policies.compare import benchmark_service
from goodput.policies.demand import anticipated_load, token_mix
from goodput.policies.latency import TokenStats
from goodput.policies.observe import TOKEN_BUCKETS, Histogram, TierWindow, build_observation
from goodput.policies.perfmodel import StepModel
from goodput.policies.plancache import PlanCache
from goodput.policies.profiles import profile_for
from goodput.policies.types import Load, Observation, ScalerState

POLICY = SLOPolicySpec()
PROMPTS = np.geomspace(500, 40_000, 64).astype(np.int64)  # long-context chat: prefill dominates
OUTPUTS = np.full(64, 300, dtype=np.int64)
SPEC = benchmark_service(4.0, prompt_tokens=(7000, 40_000), output_tokens=(300, 700), slo_ms=(5000.0, 100.0))


def _window(queries: float | None, hits: float | None, requests: float = 10.0) -> TierWindow:
    tokens = Histogram.from_samples(TOKEN_BUCKETS, np.full(int(requests), 4000.0))
    return TierWindow(
        requests=requests,
        prompt_tokens=tokens,
        output_tokens=tokens,
        prefix_cache_queries=queries,
        prefix_cache_hits=hits,
    )


def _observe(*tiers: TierWindow) -> Observation:
    obs = build_observation(15.0, 15.0, dict(zip(("interactive", "batch"), tiers, strict=False)))
    assert obs is not None
    return obs


def test_the_hit_share_is_hits_over_queries_summed_over_tiers() -> None:
    assert _observe(_window(40_000, 10_000)).prefix_cache_hit_fraction == pytest.approx(0.25)
    both = _observe(_window(40_000, 10_000), _window(10_000, 10_000))
    assert both.prefix_cache_hit_fraction == pytest.approx(0.4)
    assert both.per_tier["batch"].prefix_cache_hit_fraction == pytest.approx(1.0)
    # no counters (a worker without them), or nothing looked up: unknown, not zero
    assert _observe(_window(None, None)).prefix_cache_hit_fraction is None
    assert _observe(_window(0.0, 0.0)).prefix_cache_hit_fraction is None


def test_the_share_is_averaged_with_the_token_mix_and_kept_through_windows_without_counters() -> None:
    state = token_mix(_observe(_window(40_000, 20_000)), ScalerState(), POLICY)
    assert state.cached_prompt_fraction == pytest.approx(0.5)
    state = token_mix(_observe(_window(40_000, 0.0)), state, POLICY)
    assert 0.0 < state.cached_prompt_fraction < 0.5  # moves towards the new window, weighted by requests
    kept = token_mix(_observe(_window(None, None)), state, POLICY)
    assert kept.cached_prompt_fraction == state.cached_prompt_fraction


def test_the_load_planned_for_carries_the_share_rounded_down() -> None:
    obs = _observe(_window(40_000, 10_000))
    state = ScalerState(cached_prompt_fraction=0.259)
    load = anticipated_load(SPEC, POLICY, obs, state, 15.0).load
    assert load.cached_prompt_fraction == planned_share(0.259) == pytest.approx(0.24)
    assert planned_share(0.3) == pytest.approx(0.3) and planned_share(1.0) == 1.0


def test_the_discount_shortens_the_prefill_but_not_the_kv() -> None:
    full = TokenStats.from_samples(PROMPTS, OUTPUTS)
    cached = token_stats(Load(1.0, PROMPTS, OUTPUTS, cached_prompt_fraction=0.25))
    np.testing.assert_allclose(cached.prompts, full.prompts * 0.75)
    assert cached.decode_context == full.decode_context  # a decoding sequence holds its whole prompt
    all_cached = token_stats(Load(1.0, PROMPTS, OUTPUTS, cached_prompt_fraction=1.0))
    assert (all_cached.prompts == 1.0).all()  # the last prompt token is always computed


def test_a_cached_share_plans_fewer_replicas_for_a_prefill_bound_load() -> None:
    load = Load(4.0, PROMPTS, OUTPUTS)
    plain = planner.plan(SPEC, load, POLICY).chosen
    cached = planner.plan(SPEC, replace(load, cached_prompt_fraction=0.3), POLICY).chosen
    assert plain is not None and cached is not None
    assert cached.replicas < plain.replicas
    # the memory check of a max batch still counts the full prompts' KV
    model = StepModel(profile_for(SPEC.model), accelerator(plain.accelerator), plain.tensor_parallel)
    cached_load = replace(load, cached_prompt_fraction=0.3)
    assert planner.feasible_batches(model, token_stats(cached_load), cached_load, Tier.INTERACTIVE) == (
        planner.feasible_batches(model, token_stats(load), load, Tier.INTERACTIVE)
    )
    resized = planner.replicas_for(SPEC, plain, replace(load, cached_prompt_fraction=0.3), POLICY)
    assert resized.replicas < plain.replicas


def test_the_plan_cache_tells_cached_shares_apart() -> None:
    load = Load(4.0, PROMPTS, OUTPUTS)
    cached = replace(load, cached_prompt_fraction=0.3)
    assert PlanCache.key(SPEC, load, POLICY, 1.0, 1.0) != PlanCache.key(SPEC, cached, POLICY, 1.0, 1.0)


def test_calibration_predicts_with_the_same_share_so_the_cache_is_not_counted_twice() -> None:
    plan = planner.plan(SPEC, Load(4.0, PROMPTS, OUTPUTS), POLICY).chosen
    assert plan is not None
    rate, batch, window = (
        np.array([[1.0]]),
        np.array([plan.max_batch]),
        np.array([plan.batch_window_ms / 1000]),
    )
    plain = running_predictor(SPEC, plan, ScalerState()).predict(rate, batch, window)
    cached = running_predictor(SPEC, plan, ScalerState(cached_prompt_fraction=0.3)).predict(
        rate, batch, window
    )
    assert float(cached.ttft.ravel()[0]) < float(plain.ttft.ravel()[0])


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="cached_prompt_fraction"):
        Load(1.0, PROMPTS, OUTPUTS, cached_prompt_fraction=1.5)
