"""Paged decode attention as a Triton kernel: one query token per sequence, read straight from the KV pool.

The reference path copies every sequence's blocks into a padded tensor before attending; this kernel
instead walks each sequence's block table and reads its K/V rows in place, stopping at its own context
length. One program handles one sequence, one key/value head (all the query heads that share it: GQA,
padded to the 16 rows of a tensor-core tile) and one split of the context; splits keep the GPU busy when
the batch is small (flash-decoding), and their partial results are merged by log-sum-exp weights. K/V
are widened to fp32 and multiplied in TF32, which holds bf16 and fp16 values exactly. The grid depends only on tensor shapes, so the
kernel can be captured in a CUDA graph. Set TRITON_INTERPRET=1 before importing triton to run it on CPU
tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Context tokens per loop iteration times head dim: 32 x 64 or 16 x 128 compile to 128-167 registers per
# thread on sm_90 without spills (ptxas, via cuobjdump); 32 x 128 needs 224 and 64 x 128 spills.
BLOCK_TOKENS = 2048
MIN_SPLIT = 64  # a split shorter than this costs more to merge than it saves
TARGET_PROGRAMS = 256  # enough programs to fill an H100's 132 SMs about twice


# Integers that change from step to step: specialising on them (== 1, divisible by 16) would compile new
# variants in the middle of serving.
@triton.jit(do_not_specialize=["split_len", "stride_tb", "stride_ob", "stride_oh", "stride_lb", "stride_lh"])
def _paged_decode_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    tables_ptr,
    ctx_ptr,
    out_ptr,
    lse_ptr,
    scale,
    split_len,
    stride_qb,
    stride_qh,
    stride_ch,
    stride_cb,
    stride_cs,
    stride_tb,
    stride_ob,
    stride_oh,
    stride_os,
    stride_lb,
    stride_lh,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b, kvh, split = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)  # int64: large pools
    ctx = tl.load(ctx_ptr + b)
    start = split * split_len
    end = tl.minimum(ctx, start + split_len)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    heads = kvh * GROUP + g
    g_ok, d_ok = g < GROUP, d < HEAD_DIM
    q = tl.load(
        q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
        mask=g_ok[:, None] & d_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    denom = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    for n0 in range(start, end, BLOCK):
        n = n0 + tl.arange(0, BLOCK)
        n_ok = n < end
        block = tl.load(tables_ptr + b * stride_tb + n // BLOCK_SIZE, mask=n_ok, other=0)
        rows = kvh * stride_ch + block * stride_cb + (n % BLOCK_SIZE) * stride_cs
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + rows[:, None] + d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + rows[:, None] + d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [GROUP_PAD, BLOCK]
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m = m_new
    seen = denom > 0  # False for a split past the end of this sequence's context
    out = acc / tl.where(seen, denom, 1.0)[:, None]
    tl.store(
        out_ptr + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + d[None, :],
        out,
        mask=g_ok[:, None] & d_ok[None, :],
    )
    lse = tl.where(seen, m + tl.log(tl.where(seen, denom, 1.0)), float("-inf"))
    tl.store(lse_ptr + b * stride_lb + heads * stride_lh + split, lse, mask=g_ok)


def num_splits(batch: int, kv_heads: int, max_context: int) -> int:
    """Context splits per (sequence, head): more when the batch alone leaves SMs idle."""
    wanted = max(1, triton.cdiv(TARGET_PROGRAMS, batch * kv_heads))
    return max(1, min(wanted, triton.cdiv(max_context, MIN_SPLIT)))


def constants(group: int, head_dim: int, block_size: int, dtype: torch.dtype) -> dict:
    """The kernel's compile-time parameters for one model shape."""
    hd_pad = triton.next_power_of_2(head_dim)
    return {
        "GROUP": group,
        "GROUP_PAD": max(16, triton.next_power_of_2(group)),  # tl.dot's smallest tile
        "HEAD_DIM": head_dim,
        "HEAD_DIM_PAD": hd_pad,
        "BLOCK_SIZE": block_size,
        "BLOCK": max(16, BLOCK_TOKENS // hd_pad),
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",  # tf32 holds bf16/fp16 values exactly
    }


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    block: int | None = None,
    splits: int | None = None,
    launch: dict[str, int] | None = None,
) -> torch.Tensor:
    """q [B, heads, D]; caches [kv_heads, blocks, block_size, D]; block_tables [B, W]; context_lens [B]
    (each >= 1). Returns [B, heads, D] in q's dtype. `block` (context tokens per iteration), `splits` and
    `launch` (Triton's num_warps, num_stages) override the defaults: for tuning (bench/decode_tune.py)."""
    b, heads, hd = q.shape
    kv_heads, _, block_size, _ = k_cache.shape
    group = heads // kv_heads
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == q.stride(2) == 1, "rows contiguous"
    max_context = block_tables.shape[1] * block_size  # from shapes only: no device read, graph-safe
    const = constants(group, hd, block_size, q.dtype) | ({"BLOCK": block} if block else {})
    splits = splits or num_splits(b, kv_heads, max_context)
    split_len = triton.cdiv(triton.cdiv(max_context, splits), const["BLOCK"]) * const["BLOCK"]
    partial = torch.empty(b, heads, splits, hd, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, heads, splits, dtype=torch.float32, device=q.device)
    _paged_decode_kernel[(b, kv_heads, splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        partial,
        lse,
        scale,
        split_len,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        partial.stride(0),
        partial.stride(1),
        partial.stride(2),
        lse.stride(0),
        lse.stride(1),
        **const,
        **(launch or {}),
    )
    if splits == 1:
        return partial[:, :, 0].to(q.dtype)
    weights = torch.softmax(lse, dim=-1).unsqueeze(-1)
    return (partial * weights).sum(dim=2).to(q.dtype)
