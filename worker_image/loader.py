"""Build the model and tokenizer from a Hugging Face folder or a `random:<preset>` name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from goodput.worker_image import parallel, parallel_layers, presets
from goodput.worker_image.model import CausalLM, ModelConfig
from goodput.worker_image.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer

log = logging.getLogger(__name__)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of one of config.DTYPES (the names are torch's own)."""
    return getattr(torch, name)


def load_model(
    source: str, dtype: str, device: str, max_len: int, seed: int = 0
) -> tuple[CausalLM, Tokenizer, ModelConfig]:
    if source.startswith("random:"):
        name = source.removeprefix("random:")
        hf_config = presets.preset_config(name)
        weights = presets.random_weights(hf_config, seed)
        tokenizer: Tokenizer = ByteTokenizer(source)
    else:
        folder = Path(source)
        if not (folder / "config.json").is_file():
            raise ValueError(f"model {source!r}: no config.json (expected a Hugging Face folder)")
        hf_config = json.loads((folder / "config.json").read_text())
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ValueError(f"model {source!r}: no *.safetensors files")
        weights = {k: v for f in files for k, v in load_file(f).items()}
        tokenizer = _folder_tokenizer(folder, hf_config)
    cfg = ModelConfig.from_hf(hf_config)
    tp = parallel.world_size()
    for what, n in (
        ("heads", cfg.num_heads),
        ("kv heads", cfg.num_kv_heads),
        ("intermediate_size", cfg.intermediate_size),
    ):
        if n % tp:
            raise ValueError(
                f"invalid engine config: tensor_parallel_size={tp}: does not divide {what} ({n})"
            )
    model = CausalLM(cfg)
    state = parallel_layers.shard_state_dict(
        convert_hf_state_dict(weights, cfg), cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"model {source!r}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
    model = model.to(device=device, dtype=torch_dtype(dtype)).eval()
    model.build_rope(max_len, device)
    return model, tokenizer, cfg


def _folder_tokenizer(folder: Path, hf_config: dict) -> Tokenizer:
    cfg = ModelConfig.from_hf(hf_config)
    if (folder / "tokenizer.json").is_file():
        return HFTokenizer(folder, folder.name, cfg.eos_token_id)
    if cfg.vocab_size < ByteTokenizer.PAD + 1:
        raise ValueError(f"model {str(folder)!r}: no tokenizer.json")
    log.warning("model %s has no tokenizer.json; using the built-in byte tokenizer", folder)
    return ByteTokenizer(folder.name)


def convert_hf_state_dict(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face names to ours: q/k/v and gate/up projections are fused into one matmul each."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if "rotary_emb" in name or (cfg.tie_word_embeddings and name == "lm_head.weight"):
            continue
        out[name] = tensor
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{p}self_attn.{n}_proj.{kind}", None) for n in "qkv"]
            if all(t is not None for t in parts):
                out[f"{p}self_attn.qkv_proj.{kind}"] = torch.cat(parts)  # type: ignore[arg-type]
            parts = [out.pop(f"{p}mlp.{n}_proj.{kind}", None) for n in ("gate", "up")]
            if all(t is not None for t in parts):
                out[f"{p}mlp.gate_up_proj.{kind}"] = torch.cat(parts)  # type: ignore[arg-type]
    return out
