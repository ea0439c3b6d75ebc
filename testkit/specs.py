"""Specs the tests share: one Llama-3-8B interactive service on H100s, sized by its expected load; and hand-made
plans."""

from __future__ import annotations

from goodput.crds.inferenceservice import InferenceServiceSpec, Tier
from goodput.policies.types import Candidate, TierConfig


def llama_h100(expected_rps: float) -> InferenceServiceSpec:
    """Llama-3-8B shape, TTFT/TPOT p95 1000/100 ms at 99%, up to 64 H100s at TP 1: the autoscaler's test bed."""
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "llama-3-8b", "source": "random:llama-3-8b"},
            "slo": {"ttftP95Ms": 1000, "tpotP95Ms": 100, "attainment": 0.99},
            "traffic": {"class": "interactive", "expectedRps": expected_rps},
            "accelerators": [{"type": "H100-SXM", "maxCount": 64}],
            "scaling": {"minReplicas": 1, "maxReplicas": 64, "maxTensorParallel": 1},
        }
    )


def make_plan(
    accelerator: str = "CPU",
    tp: int = 1,
    tiers: tuple[tuple[str, int, int, float], ...] = (("interactive", 2, 32, 3.0),),
    chunk_tokens: int = 512,
) -> Candidate:
    """A hand-made plan: tiers as (tier, replicas, max batch, batch window ms)."""
    configs = tuple(TierConfig(Tier(t), replicas, batch, window) for t, replicas, batch, window in tiers)
    return Candidate(
        accelerator=accelerator,
        tensor_parallel=tp,
        replicas=sum(c.replicas for c in configs),
        max_batch=configs[0].max_batch,
        batch_window_ms=configs[0].batch_window_ms,
        chunk_tokens=chunk_tokens,
        tier="mixed" if len(configs) > 1 else tiers[0][0],
        tiers=configs,
        predicted_ttft_p95_ms=120.0,
        predicted_tpot_p95_ms=8.0,
        cost_per_hour=0.1,
        utilisation=0.6,
    )


# A Llama-3.1-405B-shaped architecture (public config): too large for any single small GPU, so a service
# limited to one such GPU per replica has no feasible plan.
LLAMA_405B_ARCHITECTURE = {
    "params": 405_000_000_000,
    "layers": 126,
    "hiddenSize": 16384,
    "heads": 128,
    "kvHeads": 8,
    "headDim": 128,
    "vocabSize": 128256,
}
