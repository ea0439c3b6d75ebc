"""The router's prefill bound follows the SLO, the model and the hardware, not one token count for all."""

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.policies.catalog import accelerator
from goodput.policies.compare import ServiceShape, benchmark_service
from goodput.policies.perfmodel import StepModel
from goodput.policies.prefill_bound import (
    PREFILL_SHARE,
    max_prefill_tokens,
    prefill_tokens_per_s,
    tier_prefill_bounds,
)
from goodput.policies.profiles import profile_for
from testkit.specs import make_plan

SMALL = benchmark_service(10.0)  # an 8B-class model
LARGE = benchmark_service(
    10.0, shape=ServiceShape("llama-3-70b", (("A100-80GB", None),), max_tensor_parallel=8)
)


def model(spec: InferenceServiceSpec, kind: str = "H100-SXM", tp: int = 1) -> StepModel:
    return StepModel(profile_for(spec.model), accelerator(kind), tp)


def test_the_bound_is_a_share_of_the_prefill_a_replica_computes_within_the_target() -> None:
    m = model(SMALL)
    rate = prefill_tokens_per_s(m, 512)
    assert max_prefill_tokens(m, 512, 1000.0) == int(rate * PREFILL_SHARE)
    # a looser target holds proportionally more; a faster replica (more TP) more at the same target
    assert max_prefill_tokens(m, 512, 5000.0) == int(rate * 5 * PREFILL_SHARE)
    assert max_prefill_tokens(model(SMALL, tp=2), 512, 1000.0) > max_prefill_tokens(m, 512, 1000.0)


def test_a_slow_replica_still_takes_one_chunk() -> None:
    slow = model(LARGE, "A100-80GB", 4)
    assert max_prefill_tokens(slow, 2048, 1.0) == 2048


def test_each_planned_tier_gets_its_own_bound_from_its_chunk_size() -> None:
    bounds = tier_prefill_bounds(
        SMALL, make_plan("H100-SXM", 1, (("interactive", 1, 64, 3.0), ("batch", 1, 64, 3.0)))
    )
    assert set(bounds) == {"interactive", "batch"}
    (_, ttft_ms), _ = SMALL.slo.steering_targets()
    assert bounds["interactive"] == max_prefill_tokens(model(SMALL), 512, ttft_ms)
    assert bounds["batch"] == max_prefill_tokens(model(SMALL), 2048, ttft_ms)


def test_a_70b_model_on_a100s_is_bounded_far_below_an_8b_on_an_h100() -> None:
    small = tier_prefill_bounds(SMALL, make_plan("H100-SXM", 1, (("interactive", 1, 64, 3.0),)))[
        "interactive"
    ]
    large = tier_prefill_bounds(LARGE, make_plan("A100-80GB", 4, (("interactive", 1, 64, 3.0),)))[
        "interactive"
    ]
    assert large * 5 < small
