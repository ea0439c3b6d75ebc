"""A Llama-family decoder (Llama, Qwen2, Qwen3) over a flattened batch of tokens and a paged KV cache.

All sequences of a step are concatenated into one token dimension, so every linear layer runs once per
step. Attention is the only per-sequence part (attention.py): decode tokens are grouped and attend to the
block pool through padded block tables; prompt chunks run causal attention one sequence at a time.
Numerics follow Hugging Face's implementations so greedy outputs match token for token in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from goodput.worker_image import attention, parallel
from goodput.worker_image.parallel_layers import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    VocabParallelEmbedding,
)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    eos_token_id: int | None = None
    bos_token_id: int | None = None

    @classmethod
    def from_hf(cls, c: dict) -> ModelConfig:
        arch = (c.get("architectures") or [""])[0]
        model_type = c.get("model_type", "")
        rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        eos = c.get("eos_token_id")
        return cls(
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"],
            num_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
            head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
            rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", c.get("rope_theta", 10000.0)),
            rope_scaling=None if rope_type == "default" else {**rope, "rope_type": rope_type},
            max_position_embeddings=c.get("max_position_embeddings", 2048),
            tie_word_embeddings=c.get("tie_word_embeddings", False),
            qkv_bias=model_type == "qwen2" or arch.startswith("Qwen2") or c.get("attention_bias", False),
            o_bias=c.get("attention_bias", False),
            mlp_bias=c.get("mlp_bias", False),
            qk_norm=model_type == "qwen3" or arch.startswith("Qwen3"),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            bos_token_id=c.get("bos_token_id"),
        )


@dataclass
class DecodeGroup:
    """Decode tokens [start, end) of the flat batch, one per sequence, attended in one backend call."""

    start: int
    end: int
    block_tables: torch.Tensor  # [B, max_blocks] int64, padded with any valid block id
    context_lens: torch.Tensor  # [B] int64: tokens in each sequence's context, this one included


@dataclass
class PrefillChunk:
    """Prompt tokens [start, end) of one sequence whose first token sits at position `context`."""

    start: int
    end: int
    context: int
    block_table: torch.Tensor  # [num_blocks] int64


@dataclass
class AttnMetadata:
    slot_mapping: torch.Tensor  # [T] flat cache slot of each new token
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)


def rope_inv_freq(cfg: ModelConfig, max_len: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies as Hugging Face computes them, for the default, linear, dynamic and llama3 types.
    Dynamic NTK rescales only past max_position_embeddings, with one table sized for max_len."""
    dim, base = cfg.head_dim, cfg.rope_theta
    s = cfg.rope_scaling or {}
    kind = s.get("rope_type", "default")
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if kind == "dynamic" and max_len > cfg.max_position_embeddings:
        f = s["factor"]
        base = base * ((f * max_len / cfg.max_position_embeddings) - (f - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base**exponents)
    if kind == "linear":
        inv_freq = inv_freq / s["factor"]
    elif kind == "llama3":
        f, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / lo, inv_freq / f, inv_freq)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / f + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind not in ("default", "dynamic"):
        raise ValueError(f"unsupported rope_scaling type {kind!r}")
    return inv_freq, 1.0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Hugging Face's x * cos + rotate_half(x) * sin, with rotate_half's negation folded into the table."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        tp = parallel.world_size()  # this rank holds 1/tp of the query and key/value heads
        self.nh, self.nkv, self.hd = cfg.num_heads // tp, cfg.num_kv_heads // tp, cfg.head_dim
        qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * self.hd
        self.qkv_proj = ColumnParallelLinear(cfg.hidden_size, qkv, bias=cfg.qkv_bias)
        self.o_proj = RowParallelLinear(cfg.num_heads * self.hd, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.scale = self.hd**-0.5
        self.k_cache = self.v_cache = torch.empty(0)  # [kv_heads, num_blocks, block_size, head_dim]
        self.decode: attention.DecodeFn = attention.reference_decode  # the runner sets its backend

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttnMetadata):
        t, nqk = x.shape[0], self.nh + self.nkv
        qkv = self.qkv_proj(x)
        qk, v = (
            qkv[:, : nqk * self.hd].view(t, nqk, self.hd),
            qkv[:, nqk * self.hd :].view(t, self.nkv, self.hd),
        )
        if self.q_norm is not None:
            qk = torch.cat((self.q_norm(qk[:, : self.nh]), self.k_norm(qk[:, self.nh :])), dim=1)
        qk = rotate(qk, cos, sin)
        q, k = qk[:, : self.nh], qk[:, self.nh :]
        kc, vc = self.k_cache, self.v_cache
        kc.view(self.nkv, -1, self.hd).index_copy_(1, meta.slot_mapping, k.transpose(0, 1))
        vc.view(self.nkv, -1, self.hd).index_copy_(1, meta.slot_mapping, v.transpose(0, 1))
        out = torch.empty(t, self.nh, self.hd, dtype=x.dtype, device=x.device)
        for g in meta.decode_groups:
            out[g.start : g.end] = self.decode(
                q[g.start : g.end], kc, vc, g.block_tables, g.context_lens, self.scale
            )
        for p in meta.prefills:
            s = slice(p.start, p.end)
            out[s] = attention.prefill(q[s], k[s], v[s], kc, vc, p.context, p.block_table, self.scale)
        return self.o_proj(out.view(t, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = ColumnParallelLinear(cfg.hidden_size, 2 * cfg.intermediate_size, cfg.mlp_bias)
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttnMetadata):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, meta)
        return h + self.mlp(self.post_attention_layernorm(h))


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg)
        self.lm_head = ParallelLMHead(cfg.hidden_size, cfg.vocab_size)
        self.tie_weights()
        self.cos_table = self.sin_table = torch.empty(0)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def build_rope(self, max_len: int, device: torch.device | str) -> None:
        inv_freq, scaling = rope_inv_freq(self.config, max_len)
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        cos, sin = freqs.cos() * scaling, freqs.sin() * scaling
        self.cos_table = torch.cat((cos, cos), dim=-1).to(device)
        self.sin_table = torch.cat((-sin, sin), dim=-1).to(device)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttnMetadata) -> torch.Tensor:
        """Final hidden states (before the last norm) of every token of the flat batch."""
        h = self.model.embed_tokens(input_ids)
        cos = self.cos_table[positions].to(h.dtype).unsqueeze(1)
        sin = self.sin_table[positions].to(h.dtype).unsqueeze(1)
        for layer in self.model.layers:
            h = layer(h, cos, sin, meta)
        return h

    def logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Full-vocabulary logits on rank 0; None on the other tensor-parallel ranks."""
        logits = self.lm_head(self.model.norm(hidden))
        return None if logits is None else logits.float()
