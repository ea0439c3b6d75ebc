"""Roofline cost of one engine step, and the memory a replica needs.

A continuous-batching engine runs steps; each step decodes one token for every running sequence and
prefills up to a chunk of prompt tokens. Its time is

    overhead + all-reduces + max(bytes moved / effective bandwidth, FLOPs / effective FLOP/s)

with bytes = weights/TP + resident KV read by attention + KV written, and FLOPs = 2·params per new token plus
attention over the context. Decode is bandwidth bound (weights and KV dominate), a large prefill chunk is
compute bound, so the same formula covers both and the interference between them. TP splits weights, KV
and FLOPs by TP and adds two all-reduces of the step's activations per layer.

The formula is written once, `step_seconds` over a vector of coefficients (`StepModel.cost`): the
planner's closed forms evaluate it on numpy grids and the trace-replay simulator's compiled engine loop
(`policies/engine_core.py`) on scalars, step by step, so the two charge every step alike.

Calibration: `tpot_factor` scales the decode-only step, `ttft_factor` the extra time a prefill chunk adds,
so observed/predicted ratios from production correct each phase separately. Every method takes numpy
arrays (or scalars) and broadcasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from goodput.crds.inferenceservice import ModelSpec
from goodput.policies.catalog import Accelerator, accelerator
from goodput.policies.profiles import ModelProfile, profile_for
from goodput.policies.types import Candidate

ArrayLike = np.ndarray | float | int

# The step's coefficients, in seconds, in the order `step_seconds` reads them: per step; per decoding sequence
# and per prefill token that overlap nothing (all-reduces, host work); streaming the weights; per token of KV
# read or written; compute per decoded token, per prefill token, and per (token, context token) attended.
OVERHEAD, DECODE_SERIAL, PREFILL_SERIAL, WEIGHTS, KV_TOKEN, DECODE_COMPUTE, PREFILL_COMPUTE, ATTENTION = (
    range(8)
)
COST_TERMS = 8


def step_seconds(
    cost: np.ndarray, decodes: ArrayLike, prefill: ArrayLike, kv: ArrayLike, attended: ArrayLike
) -> ArrayLike:
    """One step that decodes `decodes` sequences over `kv` resident tokens and prefills `prefill` tokens whose
    attention spans `attended` (token, context token) pairs in all: overhead + serial work + the roofline.

    Plain arithmetic, so numpy grids and the simulator's compiled scalar loop run the same formula.
    """
    memory = cost[WEIGHTS] + cost[KV_TOKEN] * (kv + prefill)
    compute = (
        cost[DECODE_COMPUTE] * decodes + cost[PREFILL_COMPUTE] * prefill + cost[ATTENTION] * (kv + attended)
    )
    serial = cost[DECODE_SERIAL] * decodes + cost[PREFILL_SERIAL] * prefill
    return cost[OVERHEAD] + serial + np.maximum(memory, compute)


@dataclass(frozen=True)
class StepModel:
    """Step-time and memory model of one replica: a model on `tensor_parallel` devices of one type."""

    profile: ModelProfile
    accelerator: Accelerator
    tensor_parallel: int = 1
    ttft_factor: float = 1.0
    tpot_factor: float = 1.0

    @property
    def weight_bytes_per_device(self) -> float:
        return self.profile.weight_bytes / self.tensor_parallel

    @property
    def kv_bytes_per_token_per_device(self) -> float:
        return self.profile.kv_bytes_per_token / self.tensor_parallel

    @cached_property
    def cost(self) -> np.ndarray:
        """The coefficients of `step_seconds` for this model, accelerator and TP.

        TP splits weights, KV and FLOPs and adds two ring all-reduces per layer of the step's hidden states:
        a latency per step and a transfer per token.
        """
        p, acc, tp = self.profile, self.accelerator, self.tensor_parallel
        cost = np.zeros(COST_TERMS)
        lm_head = 2.0 * p.vocab_size * p.hidden_size
        flops = acc.effective_flops * tp
        cost[OVERHEAD] = acc.step_overhead_s
        if tp > 1:
            cost[OVERHEAD] += 2 * p.layers * acc.interconnect_latency_s * math.ceil(math.log2(tp))
            per_token = 2 * p.layers * 2 * (tp - 1) / tp * p.hidden_size * p.bytes_per_element
            cost[DECODE_SERIAL] = cost[PREFILL_SERIAL] = per_token / acc.interconnect_bandwidth
        cost[WEIGHTS] = self.weight_bytes_per_device / acc.effective_bandwidth
        cost[KV_TOKEN] = self.kv_bytes_per_token_per_device / acc.effective_bandwidth
        cost[DECODE_COMPUTE] = p.matmul_flops_per_token / flops
        cost[PREFILL_COMPUTE] = (p.matmul_flops_per_token - lm_head) / flops
        cost[ATTENTION] = p.attention_flops_per_token_per_context / flops
        return cost

    def _raw_step_time(
        self, n: ArrayLike, c: ArrayLike, kv: ArrayLike, prefill_context: ArrayLike
    ) -> ArrayLike:
        return ((n + c) > 0) * step_seconds(self.cost, n, c, kv, c * prefill_context)

    def step_time(
        self,
        decode_seqs: ArrayLike,
        prefill_tokens: ArrayLike = 0.0,
        kv_tokens: ArrayLike = 0.0,
        prefill_context: ArrayLike | None = None,
    ) -> ArrayLike:
        """Seconds for one step: `decode_seqs` decodes over `kv_tokens` resident context, plus a prefill chunk
        of `prefill_tokens` whose tokens attend on average to `prefill_context` tokens (default half the chunk).
        """
        ctx = prefill_tokens / 2 if prefill_context is None else prefill_context
        decode = self._raw_step_time(decode_seqs, 0.0, kv_tokens, 0.0)
        both = self._raw_step_time(decode_seqs, prefill_tokens, kv_tokens, ctx)
        return self.tpot_factor * decode + self.ttft_factor * (both - decode)

    def decode_time(self, batch: ArrayLike, mean_context: ArrayLike) -> ArrayLike:
        """One decode step for `batch` sequences of `mean_context` tokens each: the TPOT of that batch."""
        batch = np.asarray(batch, dtype=float)
        return self.step_time(batch, 0.0, batch * np.asarray(mean_context, dtype=float))

    def prefill_time(self, prompt_tokens: ArrayLike, chunk_tokens: int | None = None) -> ArrayLike:
        """Prefill of one prompt alone, in chunks of `chunk_tokens` (whole prompt in one step when None)."""
        prompt = np.asarray(prompt_tokens, dtype=float)
        if chunk_tokens is None:
            return self.step_time(0.0, prompt, 0.0, prompt / 2)
        full, rest = np.floor_divide(prompt, chunk_tokens), np.mod(prompt, chunk_tokens)
        # Chunk k attends to the k·chunk tokens before it plus half of itself; an empty remainder costs 0.
        total = self.step_time(0.0, rest, 0.0, full * chunk_tokens + rest / 2)
        for k in range(int(np.max(full, initial=0))):
            chunk = self.step_time(0.0, chunk_tokens, 0.0, k * chunk_tokens + chunk_tokens / 2)
            total = total + np.where(k < full, chunk, 0.0)
        return total

    def activation_bytes(self, max_batch: ArrayLike, chunk_tokens: ArrayLike) -> ArrayLike:
        """Peak transient memory per device of one step: hidden states, MLP intermediates and fp32 logits."""
        p = self.profile
        tokens = np.asarray(max_batch, dtype=float) + np.asarray(chunk_tokens, dtype=float)
        per_token = (8 * p.hidden_size + 3 * p.intermediate_size / self.tensor_parallel) * p.bytes_per_element
        return tokens * per_token + np.asarray(max_batch, dtype=float) * p.vocab_size * 4

    def kv_capacity_tokens(self, max_batch: ArrayLike = 0, chunk_tokens: ArrayLike = 0) -> ArrayLike:
        """Tokens of KV cache that fit next to the weights and activations; negative when weights don't fit."""
        free = (
            self.accelerator.usable_memory_bytes
            - self.weight_bytes_per_device
            - self.activation_bytes(max_batch, chunk_tokens)
        )
        return free / self.kv_bytes_per_token_per_device

    def memory_bytes(self, kv_tokens: ArrayLike, max_batch: ArrayLike, chunk_tokens: ArrayLike) -> ArrayLike:
        """Device memory a replica claims holding `kv_tokens` of context (reserved bytes included)."""
        return (
            self.accelerator.reserved_bytes
            + self.weight_bytes_per_device
            + self.activation_bytes(max_batch, chunk_tokens)
            + np.asarray(kv_tokens, dtype=float) * self.kv_bytes_per_token_per_device
        )


def planned_model(model: ModelSpec, plan: Candidate) -> StepModel:
    """The uncalibrated model of one of `plan`'s replicas: `model` on its accelerator at its TP degree (what the
    simulator takes for the truth, and what sizes the router's bounds)."""
    return StepModel(profile_for(model), accelerator(plan.accelerator), plan.tensor_parallel)
