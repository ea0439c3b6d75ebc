"""Model profiles: the shape numbers the performance model needs, from a manifest, a preset or config.json.

Resolution order in `profile_for`: the manifest's `architecture` (explicit beats inferred), then a
`random:<preset>` source (the worker's presets, worker_image.contract), then `config.json` in the source folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from goodput.crds.inferenceservice import Architecture, ModelSpec
from goodput.policies.lookup import by_name
from goodput.worker_image.contract import MODEL_PRESETS, RANDOM_PREFIX

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}


@dataclass(frozen=True)
class ModelProfile:
    name: str
    params: int
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    dtype: str = "bfloat16"

    @property
    def bytes_per_element(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        return self.params * self.bytes_per_element

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer, every KV head: 2 · layers · kv_heads · head_dim · bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_element

    @property
    def matmul_flops_per_token(self) -> float:
        """2 FLOPs per weight touched; the input embedding is a lookup, not a matmul."""
        return 2.0 * (self.params - self.vocab_size * self.hidden_size)

    @property
    def attention_flops_per_token_per_context(self) -> float:
        """QKᵀ and AV: 2 · 2 · heads · head_dim per layer for every cached token attended to."""
        return 4.0 * self.layers * self.heads * self.head_dim

    def with_dtype(self, dtype: str) -> ModelProfile:
        return replace(self, dtype=dtype)


def count_params(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    vocab: int,
    intermediate: int,
    tied_embeddings: bool = False,
    qkv_bias: bool = False,
) -> int:
    """Parameters of a Llama-style decoder (gated MLP, RMSNorm, optional QKV bias)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = hidden * q + 2 * hidden * kv + q * hidden + ((q + 2 * kv) if qkv_bias else 0)
    mlp = 3 * hidden * intermediate
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if tied_embeddings else 2)
    return layers * per_layer + embeddings + hidden


def from_config(config: dict[str, Any], name: str, dtype: str | None = None) -> ModelProfile:
    """A profile from a Hugging Face config.json (Llama, Mistral, Qwen2, Qwen3 share these keys)."""
    model_type = config.get("model_type", "llama")
    if model_type not in ("llama", "mistral", "qwen2", "qwen3"):
        raise ValueError(f"unsupported model_type {model_type!r} in config.json of {name}")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    layers = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])
    intermediate = int(config["intermediate_size"])
    params = count_params(
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim,
        vocab,
        intermediate,
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
    )
    config_dtype = str(config.get("torch_dtype") or "bfloat16")
    return ModelProfile(
        name=name,
        params=params,
        layers=layers,
        hidden_size=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        intermediate_size=intermediate,
        dtype=dtype or (config_dtype if config_dtype in DTYPE_BYTES else "bfloat16"),
    )


def from_architecture(arch: Architecture, name: str, dtype: str) -> ModelProfile:
    return ModelProfile(
        name=name,
        params=arch.params,
        layers=arch.layers,
        hidden_size=arch.hidden_size,
        heads=arch.heads,
        kv_heads=arch.kv_heads,
        head_dim=arch.head_dim,
        vocab_size=arch.vocab_size,
        intermediate_size=arch.intermediate_size or 4 * arch.hidden_size,
        dtype=dtype,
    )


# The `random:<preset>` models the worker can run (worker_image.contract): the operator refuses any other.
WORKER_PRESETS = frozenset(MODEL_PRESETS)
# Public checkpoints' shapes (their config.json), so what-if planning and the simulator work without the weights.
# The planner takes them as `random:<name>`; the operator does not, since the worker cannot build them.
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "torch_dtype": "float16",
    },
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "torch_dtype": "bfloat16",
    },
    "qwen2.5-14b": {
        "model_type": "qwen2",
        "vocab_size": 152064,
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 48,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
    },
    "llama-3-70b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "torch_dtype": "bfloat16",
    },
}
PRESETS: dict[str, ModelProfile] = {
    name: from_config(config, name) for name, config in {**MODEL_PRESETS, **CHECKPOINTS}.items()
}


def preset(name: str) -> ModelProfile:
    return by_name(PRESETS, name, "model preset")


def profile_for(model: ModelSpec) -> ModelProfile:
    """Resolve a manifest's model to a profile: architecture, then random:<preset>, then config.json."""
    if model.architecture is not None:
        return from_architecture(model.architecture, model.name, model.dtype)
    if model.source.startswith(RANDOM_PREFIX):
        return replace(preset(model.source.removeprefix(RANDOM_PREFIX)), name=model.name, dtype=model.dtype)
    config_path = Path(model.source) / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"model {model.name}: no architecture in the manifest and no config.json at {config_path}"
        )
    return from_config(json.loads(config_path.read_text()), model.name, model.dtype)
