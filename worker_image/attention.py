"""Attention over the paged KV cache, with interchangeable decode backends.

Prefill (a prompt chunk of one sequence) always runs through PyTorch's scaled_dot_product_attention,
which picks FlashAttention or memory-efficient kernels on a GPU. Decode (one new token per sequence)
has two backends with the same signature: "reference", plain PyTorch that gathers each sequence's
blocks into a padded tensor (the CPU path, and the yardstick the others are tested against), and
"triton", a kernel that reads the blocks in place (triton_decode.py). Caches are laid out
[kv_heads, num_blocks, block_size, head_dim].
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "reference", "triton")
DecodeFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor
]


def resolve_backend(backend: str, device: str) -> str:
    """ "auto" is Triton on CUDA and the reference on CPU. Triton on CPU needs its interpreter
    (TRITON_INTERPRET=1), which is for tests only; the error says so."""
    if backend not in BACKENDS:
        raise ValueError(f"must be one of {', '.join(BACKENDS)}")
    cuda = device.startswith("cuda")
    if backend == "auto":
        return "triton" if cuda else "reference"
    if backend == "triton" and not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("needs a CUDA device (or TRITON_INTERPRET=1, Triton's slow CPU interpreter)")
    return backend


def decode_fn(backend: str) -> DecodeFn:
    """The decode function of a resolved backend; Triton is imported only when chosen."""
    if backend == "triton":
        from goodput.worker_image.triton_decode import paged_decode

        return paged_decode
    return reference_decode


def gather(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """[kv_heads, len(block_ids) * block_size, head_dim]: whole blocks copied row by row."""
    kv, num_blocks, bs, hd = cache.shape
    return cache.view(kv, num_blocks, bs * hd).index_select(1, block_ids).view(kv, -1, hd)


def reference_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q [B, heads, D]; block_tables [B, W]; context_lens [B]. Returns [B, heads, D]."""
    b, kv, hd = q.shape[0], k_cache.shape[0], q.shape[2]
    keys = gather(k_cache, block_tables.flatten()).view(kv, b, -1, hd).transpose(0, 1)
    values = gather(v_cache, block_tables.flatten()).view(kv, b, -1, hd).transpose(0, 1)
    mask = torch.arange(keys.shape[2], device=q.device)[None, :] < context_lens[:, None]
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :], scale=scale, enable_gqa=True
    )
    return o.squeeze(2)


def prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context: int,
    block_table: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of a chunk's n queries (q [n, heads, D]) at positions [context, context + n).
    Without context (a fresh prompt) the chunk's own k/v suffice and SDPA's causal flag applies; after a
    cached prefix or an earlier chunk, keys come from the cache (which already holds this chunk) and the
    mask is causal aligned to the bottom right. Returns [n, heads, D]."""
    n = q.shape[0]
    q = q.transpose(0, 1).unsqueeze(0)  # [1, heads, n, D]: the fused GPU kernels take 4-D inputs only
    if context == 0:
        keys, values = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=scale, enable_gqa=True)
    else:
        total = context + n
        keys = gather(k_cache, block_table)[None, :, :total]
        values = gather(v_cache, block_table)[None, :, :total]
        q_pos = torch.arange(context, total, device=q.device)
        mask = torch.arange(total, device=q.device)[None, :] <= q_pos[:, None]
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)
    return o[0].transpose(0, 1)
