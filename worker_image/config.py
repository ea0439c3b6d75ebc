"""Engine arguments: one frozen dataclass, set from CLI flags and GOODPUT_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from goodput.worker_image.contract import ENV_PREFIX as ENV_PREFIX

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineConfig:
    """Validated on construction so a bad value fails at start with a message naming it."""

    model: str = field(
        metadata={
            "help": "a Hugging Face folder (config.json, safetensors, tokenizer.json) or "
            "random:<preset> (seeded random weights)"
        }
    )
    dtype: str = field(default="float32", metadata={"help": "weights and KV cache: " + ", ".join(DTYPES)})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]"})
    max_num_seqs: int = field(default=64, metadata={"help": "sequences in one batch"})
    max_num_batched_tokens: int = field(
        default=2048, metadata={"help": "tokens in one step (prefill chunks)"}
    )
    max_model_len: int = field(default=2048, metadata={"help": "prompt plus output tokens"})
    block_size: int = field(default=16, metadata={"help": "tokens per KV block (a power of two)"})
    num_kv_blocks: int | None = field(
        default=None, metadata={"help": "KV blocks; unset: sized from memory (see the two below)"}
    )
    kv_cache_memory_mb: int = field(
        default=512, metadata={"help": "KV pool size on CPU (on CUDA it is sized from free memory)"}
    )
    enable_prefix_caching: bool = field(default=True, metadata={"help": "reuse KV blocks of shared prefixes"})
    batch_window_ms: float = field(
        default=0.0, metadata={"help": "hold admissions this long to batch arrivals together"}
    )
    max_waiting: int = field(default=256, metadata={"help": "waiting requests before new ones get 429"})
    seed: int = field(default=0, metadata={"help": "random weights and unseeded sampling"})
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "ranks (processes) per replica: 1, 2, 4 or 8"}
    )
    distributed_timeout_s: float = field(
        default=60.0, metadata={"help": "a collective waiting longer than this means a rank is lost"}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads on CPU; unset: the CPUs of the process's affinity, capped by its cgroup CPU "
            "quota (v1 or v2) and torch's default; a warning at start says when the host is oversubscribed"
        },
    )
    attention_backend: str = field(
        default="auto",
        metadata={"help": "decode attention: auto (triton on CUDA, reference on CPU), reference or triton"},
    )
    enforce_eager: bool = field(
        default=False, metadata={"help": "on CUDA, never replay captured CUDA graphs for decode steps"}
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "on CUDA without num_kv_blocks: share of the GPU's memory to fill"}
    )

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"invalid engine config: {name}={getattr(self, name)!r}: {why}")

        if not self.model:
            raise bad("model", "must be a Hugging Face folder path or 'random:<preset>'")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {', '.join(DTYPES)}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise bad("device", "must be 'cpu' or 'cuda[:N]'")
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "max_waiting"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.block_size & (self.block_size - 1):
            raise bad("block_size", "must be a power of two")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise bad("num_kv_blocks", "must be >= 1 or unset")
        if self.kv_cache_memory_mb < 1:
            raise bad("kv_cache_memory_mb", "must be >= 1")
        if self.batch_window_ms < 0:
            raise bad("batch_window_ms", "must be >= 0")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise bad("cpu_threads", "must be >= 1 or unset")
        if self.tensor_parallel_size not in (1, 2, 4, 8):
            raise bad("tensor_parallel_size", "must be 1, 2, 4 or 8")
        # torch loads only when an engine is configured
        from goodput.worker_image.attention import resolve_backend

        try:
            resolve_backend(self.attention_backend, self.device)
        except ValueError as exc:
            raise bad("attention_backend", str(exc)) from None
        if not 0 < self.gpu_memory_utilization <= 1:
            raise bad("gpu_memory_utilization", "must be in (0, 1]")
        if self.distributed_timeout_s <= 0:
            raise bad("distributed_timeout_s", "must be > 0")
        for what, n in _head_counts(self.model).items():
            if n % self.tensor_parallel_size:
                raise bad("tensor_parallel_size", f"must divide the model's {what} ({n})")

    @classmethod
    def from_env_and_args(
        cls, argv: list[str] | None = None, env: Mapping[str, str] | None = None
    ) -> EngineConfig:
        """Defaults < GOODPUT_<FIELD> environment variables < --<field> flags. Unknown flags are ignored
        so the server can parse its own (host, port) from the same argv."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        parser = argparse.ArgumentParser(add_help=False)
        for f in dataclasses.fields(cls):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None)
            if (raw := env.get(ENV_PREFIX + f.name.upper())) is not None:
                values[f.name] = raw
        flags, _ = parser.parse_known_args([] if argv is None else argv)
        values.update({k: v for k, v in vars(flags).items() if v is not None})
        if "model" not in values:
            raise ValueError("invalid engine config: model is required (--model or GOODPUT_MODEL)")
        return cls(**{name: _convert(cls, name, raw) for name, raw in values.items()})


def _head_counts(model: str) -> dict[str, int]:
    """Head counts of a preset or a folder's config.json, when readable; the loader checks again."""
    from goodput.worker_image import presets

    try:
        if model.startswith("random:"):
            c = presets.preset_config(model.removeprefix("random:"))
        else:
            c = json.loads((Path(model) / "config.json").read_text())
        heads = c["num_attention_heads"]
        return {"attention heads": heads, "key/value heads": c.get("num_key_value_heads") or heads}
    except (OSError, ValueError, KeyError):
        return {}


def _convert(cls: type, name: str, raw: object) -> object:
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    text = str(raw).strip()
    try:
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int | None":
            return None if text.lower() in ("", "none", "auto") else int(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"invalid engine config: {name}={text!r}: expected {kind}") from None
    return text
