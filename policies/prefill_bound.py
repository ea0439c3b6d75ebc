"""How much prefill work the router lets one replica hold: a share of what the replica computes within the TTFT
target, so the bound follows the model, the accelerator, the TP degree and the SLO instead of being one token
count for every service.

A request admitted to a replica waits behind the prefill tokens already sent there; a request the router holds
goes, when its turn comes (shortest first), to whichever replica frees first. One shared queue serves a fleet
better than a queue per replica, so the router should hold the work rather than the replicas, as long as each
replica keeps enough to stay busy until the router sends more (it dispatches at every first token and finish)
and the longest prompts are not held behind a stream of short ones (the router orders its queue shortest
first). A replica is at its bound once it holds PREFILL_SHARE of the TTFT target's worth of prefill: a request
it admits starts its own prefill within a quarter of the target. A tenth held too much in the router: on the
real node the router's TTFT p95 then lost to the plain Service's, its long prompts waiting behind short ones.
A fixed 64k-token bound meant 1.6 s of queued prefill on one H100 serving an 8B model (above a 1 s target: the
router held almost nothing) and 48 s on a 70B model on one A100. Measured sensitivity in docs/architecture.md.
"""

from __future__ import annotations

from goodput.crds.inferenceservice import InferenceServiceSpec, Tier
from goodput.policies.perfmodel import StepModel, planned_model
from goodput.policies.planner import CHUNK_TOKENS
from goodput.policies.types import Candidate

PREFILL_SHARE = 0.25  # of the TTFT target: the prefill a replica may hold ahead of a request it admits


def prefill_tokens_per_s(model: StepModel, chunk_tokens: int) -> float:
    """The replica's prefill throughput in chunks of `chunk_tokens` at short context (the model's upper bound:
    attention over long contexts only slows it)."""
    return chunk_tokens / float(model.prefill_time(chunk_tokens, chunk_tokens))


def max_prefill_tokens(model: StepModel, chunk_tokens: int, ttft_target_ms: float) -> int:
    """The in-flight prefill tokens at which a replica is at its bound: PREFILL_SHARE of the TTFT target's
    worth, and never less than one chunk."""
    tokens = prefill_tokens_per_s(model, chunk_tokens) * ttft_target_ms / 1000.0 * PREFILL_SHARE
    return max(chunk_tokens, int(tokens))


def tier_prefill_bounds(spec: InferenceServiceSpec, plan: Candidate) -> dict[str, int]:
    """Each planned tier's bound, from the uncalibrated model of the plan's accelerator and TP (a calibration
    factor that moves would roll the router for a few percent) and the TTFT target the autoscaler steers by."""
    model = planned_model(spec.model, plan)
    (_, ttft_ms), _ = spec.slo.steering_targets()
    return {str(t.tier): max_prefill_tokens(model, CHUNK_TOKENS[Tier(t.tier)], ttft_ms) for t in plan.tiers}
