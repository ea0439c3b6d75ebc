"""`random:<preset>` models: real architectures with seeded random weights, for tests and benchmarks.

Each preset is a Hugging Face style config plus weights under Hugging Face names, so the same tensors
can be loaded into transformers for parity checks and baselines.
"""

from __future__ import annotations

import torch

from goodput.worker_image.contract import MODEL_PRESETS as PRESETS

BYTE_TOKENS = {"bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return {"tie_word_embeddings": False, **PRESETS[name], **BYTE_TOKENS}


def random_weights(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Normal(0, 0.02) matrices, unit norms and zero biases under Hugging Face names, from one seed."""
    gen = torch.Generator().manual_seed(seed)
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // nh
    qwen2 = config["model_type"] == "qwen2"

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.02

    sd = {"model.embed_tokens.weight": randn(v, h), "model.norm.weight": torch.ones(h)}
    if not config["tie_word_embeddings"]:
        sd["lm_head.weight"] = randn(v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes = {"q": nh * hd, "k": nkv * hd, "v": nkv * hd}
        for name, rows in shapes.items():
            sd[f"{p}self_attn.{name}_proj.weight"] = randn(rows, h)
            if qwen2:
                sd[f"{p}self_attn.{name}_proj.bias"] = torch.zeros(rows)
        sd[f"{p}self_attn.o_proj.weight"] = randn(h, nh * hd)
        sd[f"{p}mlp.gate_proj.weight"] = randn(inter, h)
        sd[f"{p}mlp.up_proj.weight"] = randn(inter, h)
        sd[f"{p}mlp.down_proj.weight"] = randn(h, inter)
        sd[f"{p}input_layernorm.weight"] = torch.ones(h)
        sd[f"{p}post_attention_layernorm.weight"] = torch.ones(h)
    return sd
