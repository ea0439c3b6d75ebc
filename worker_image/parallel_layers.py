"""Megatron-style sharded layers and the weight slicing that matches them. Each rank holds a slice; the
layers meet in all-reduces (row-parallel outputs, the vocabulary-parallel embedding) and one gather of the
logits to rank 0. With one rank each is the plain single-device layer."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from goodput.worker_image.parallel import rank, shard_range, vocab_shard, world_size


class ColumnParallelLinear(nn.Module):
    """Each rank holds a slice of the output features; the output stays sharded (no communication).
    Weights start uninitialized here and below: the loader assigns them, so construction costs nothing."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features // world_size(), in_features))
        self.bias = nn.Parameter(torch.empty(out_features // world_size())) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """Each rank holds a slice of the input features; partial outputs are summed, then the bias added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features // world_size()))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if world_size() == 1:
            return F.linear(x, self.weight, self.bias)
        y = F.linear(x, self.weight)
        dist.all_reduce(y)
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Each rank looks up the ids in its slice of the vocabulary; the others contribute zeros to the sum."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_shard(num), dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if world_size() == 1:
            return F.embedding(ids, self.weight)
        start = rank() * self.weight.shape[0]
        local = ids - start
        outside = (local < 0) | (local >= self.weight.shape[0])
        h = F.embedding(local.masked_fill(outside, 0), self.weight).masked_fill(outside[:, None], 0)
        dist.all_reduce(h)
        return h


class ParallelLMHead(nn.Module):
    """Each rank scores its slice of the vocabulary; rank 0 gathers the full logits, the others get None."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.weight = nn.Parameter(torch.empty(vocab_shard(vocab), hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        logits = F.linear(x, self.weight)
        if world_size() == 1:
            return logits
        parts = [torch.empty_like(logits) for _ in range(world_size())] if rank() == 0 else None
        dist.gather(logits, parts, dst=0)
        return torch.cat(parts, dim=-1)[:, : self.vocab] if parts is not None else None


def shard_state_dict(state: dict[str, torch.Tensor], nh: int, nkv: int, hd: int) -> dict[str, torch.Tensor]:
    """This rank's slices of full (fused) weights, matching the shapes of the parallel layers above."""
    if world_size() == 1:
        return state

    def rows(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        a, b = shard_range(t.shape[dim])
        return t.narrow(dim, a, b - a).clone()

    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            per = vocab_shard(t.shape[0])
            part = t[rank() * per : (rank() + 1) * per]
            out[name] = F.pad(part, (0, 0, 0, per - part.shape[0]))
        elif "qkv_proj" in name:
            q, k, v = t.split([nh * hd, nkv * hd, nkv * hd])
            out[name] = torch.cat([rows(q), rows(k), rows(v)])
        elif "gate_up_proj" in name:
            out[name] = torch.cat([rows(p) for p in t.chunk(2)])
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            out[name] = rows(t, dim=1)
        else:  # norms and row-parallel biases are replicated
            out[name] = t
    return out
