"""What a prefix cache saves the planner: the prefill compute of the prompt tokens it serves.

A hit skips computing the cached blocks of a prompt, but the sequence still holds the whole prompt's KV while it
decodes. So the observed share of cached prompt tokens (the workers' `vllm:prefix_cache_hits` over
`vllm:prefix_cache_queries`, averaged with the token mix) shortens the prompts the prefill queue sees, and nothing
else: the KV a batch holds, and the memory check of a max batch, keep the full prompts. The share is spread over
every prompt alike (the counters give the total, not which requests hit), which keeps the prefill work the
model predicts equal to the observed one. The planner and the calibration both predict with it, so the model's
error is learned net of the cache and the cache is not counted twice.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from goodput.policies.latency import TokenStats
from goodput.policies.types import Load

SHARE_STEP = 0.02  # the share is rounded down to this grid: nearby shares share a plan, none is over-counted


def planned_share(fraction: float) -> float:
    """The cached share the model predicts with: `fraction` rounded down to the grid."""
    return round(math.floor(fraction / SHARE_STEP + 1e-9) * SHARE_STEP, 6)


def cached_token_stats(prompts: np.ndarray, outputs: np.ndarray, cached_fraction: float) -> TokenStats:
    """The predictor's token statistics, the prompts' prefill shortened by the cached share."""
    stats = TokenStats.from_samples(prompts, outputs)
    if cached_fraction == 0.0:
        return stats
    return replace(stats, prompts=np.maximum(stats.prompts * (1.0 - cached_fraction), 1.0))


def token_stats(load: Load) -> TokenStats:
    """`cached_token_stats` of a load."""
    return cached_token_stats(load.prompt_tokens, load.output_tokens, load.cached_prompt_fraction)
