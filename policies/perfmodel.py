"""Roofline cost of one engine step, and the memory a replica needs.

A continuous-batching engine runs steps; each step decodes one token for every running sequence and
prefills up to a chunk of prompt tokens. Its time is

    overhead + all-reduces + max(bytes moved / effective bandwidth, FLOPs / effective FLOP/s)

with bytes = weights/TP + resident KV read by attention + KV written, and FLOPs = 2·params per new token plus
attention over the context. Decode is bandwidth bound (weights and KV dominate), a large prefill chunk is
compute bound, so the same formula covers both and the interference between them. TP splits weights, KV
and FLOPs by TP and adds two all-reduces of the step's activations per layer.

Calibration: `tpot_factor` scales the decode-only step, `ttft_factor` the extra time a prefill chunk adds,
so observed/predicted ratios from production correct each phase separately. Every method takes numpy
arrays (or scalars) and broadcasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from goodput.policies.catalog import Accelerator
from goodput.policies.profiles import ModelProfile

ArrayLike = np.ndarray | float | int


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

    def allreduce_time(self, tokens: ArrayLike) -> ArrayLike:
        """Two ring all-reduces per layer of the step's hidden states; zero without TP."""
        tp = self.tensor_parallel
        if tp == 1:
            return 0.0 * tokens
        acc, p = self.accelerator, self.profile
        message = tokens * (p.hidden_size * p.bytes_per_element)
        hop = acc.interconnect_latency_s * math.ceil(math.log2(tp))
        return 2 * p.layers * (hop + 2 * (tp - 1) / tp * message / acc.interconnect_bandwidth)

    def _raw_step_time(
        self, n: ArrayLike, c: ArrayLike, kv: ArrayLike, prefill_context: ArrayLike
    ) -> ArrayLike:
        """Plain arithmetic so it serves numpy grids and the simulator's scalar steps alike."""
        p, acc = self.profile, self.accelerator
        lm_head = 2.0 * p.vocab_size * p.hidden_size
        bytes_moved = self.weight_bytes_per_device + (kv + c) * self.kv_bytes_per_token_per_device
        flops = (
            n * p.matmul_flops_per_token
            + c * (p.matmul_flops_per_token - lm_head)
            + p.attention_flops_per_token_per_context * (kv + c * prefill_context)
        ) / self.tensor_parallel
        roofline = np.maximum(bytes_moved / acc.effective_bandwidth, flops / acc.effective_flops)
        return ((n + c) > 0) * (acc.step_overhead_s + self.allreduce_time(n + c) + roofline)

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
