"""Engine configuration: validation errors name the field; flags override GOODPUT_* variables."""

from __future__ import annotations

import pytest

from goodput.worker_image.config import EngineConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dtype", "float8"),
        ("device", "tpu"),
        ("max_num_seqs", 0),
        ("max_num_batched_tokens", -1),
        ("block_size", 12),
        ("num_kv_blocks", 0),
        ("batch_window_ms", -5.0),
        ("max_waiting", 0),
        ("tensor_parallel_size", 3),
    ],
)
def test_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{field}={value!r}"):
        EngineConfig(model="random:tiny", **{field: value})  # type: ignore[arg-type]


def test_env_then_flags() -> None:
    env = {"GOODPUT_MODEL": "random:tiny", "GOODPUT_MAX_NUM_SEQS": "8", "GOODPUT_BATCH_WINDOW_MS": "2.5"}
    cfg = EngineConfig.from_env_and_args(["--max-num-seqs", "16", "--enable-prefix-caching", "false"], env)
    assert cfg.model == "random:tiny" and cfg.max_num_seqs == 16 and cfg.batch_window_ms == 2.5
    assert cfg.enable_prefix_caching is False and cfg.num_kv_blocks is None
    cfg = EngineConfig.from_env_and_args(["--num-kv-blocks", "100", "--port", "8000"], env)
    assert cfg.num_kv_blocks == 100 and cfg.max_num_seqs == 8


def test_bad_values_from_env_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_num_seqs='many'"):
        EngineConfig.from_env_and_args([], {"GOODPUT_MODEL": "random:tiny", "GOODPUT_MAX_NUM_SEQS": "many"})
    with pytest.raises(ValueError, match="model"):
        EngineConfig.from_env_and_args([], {})


def test_unknown_preset_and_small_pool_are_reported() -> None:
    from goodput.worker_image.engine import LLMEngine

    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        LLMEngine(EngineConfig(model="random:huge"))
    with pytest.raises(ValueError, match="num_kv_blocks=2"):
        LLMEngine(EngineConfig(model="random:tiny", num_kv_blocks=2, max_model_len=128))
