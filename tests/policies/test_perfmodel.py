"""Formula tests: model profiles and the roofline step model against hand computations and public figures."""

import json

import numpy as np
import pytest

from goodput.crds.inferenceservice import Architecture, ModelSpec
from goodput.policies.catalog import CATALOG, accelerator, price_of
from goodput.policies.perfmodel import DECODE_SERIAL, PREFILL_SERIAL, StepModel
from goodput.policies.profiles import PRESETS, WORKER_PRESETS, count_params, from_config, profile_for

LLAMA_2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "intermediate_size": 11008,
    "torch_dtype": "float16",
}
LLAMA_3_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "intermediate_size": 14336,
    "torch_dtype": "bfloat16",
}
QWEN3_8B = {  # Qwen3 sets head_dim explicitly (128) although hidden_size / heads is 128 too
    "model_type": "qwen3",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_hidden_layers": 36,
    "vocab_size": 151936,
    "intermediate_size": 12288,
    "torch_dtype": "bfloat16",
}


def test_kv_bytes_per_token_llama_2_7b_fp16():
    # 2 (K and V) · 32 layers · 32 KV heads · 128 head dim · 2 bytes
    assert from_config(LLAMA_2_7B, "llama-2-7b").kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288


def test_kv_bytes_per_token_llama_3_8b_bf16_gqa():
    # Grouped-query attention: 8 KV heads, not 32
    assert from_config(LLAMA_3_8B, "llama-3-8b").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072


def test_kv_bytes_follow_dtype():
    profile = from_config(LLAMA_3_8B, "llama-3-8b")
    assert profile.with_dtype("fp8").kv_bytes_per_token == 65_536
    assert profile.with_dtype("float32").kv_bytes_per_token == 262_144


@pytest.mark.parametrize(
    ("name", "params"),
    [("llama-2-7b", 6_738_415_616), ("llama-3-8b", 8_030_261_248), ("qwen2.5-0.5b", 494_032_768)],
)
def test_parameter_counts_match_the_published_checkpoints(name, params):
    assert PRESETS[name].params == params


def test_qwen3_config_uses_its_explicit_head_dim():
    profile = from_config({**QWEN3_8B, "head_dim": 64}, "odd")
    assert profile.head_dim == 64
    assert profile.kv_bytes_per_token == 2 * 36 * 8 * 64 * 2


def test_unsupported_architecture_is_refused():
    with pytest.raises(ValueError, match="model_type"):
        from_config({**LLAMA_3_8B, "model_type": "gpt2"}, "gpt2")


def test_count_params_tied_embeddings_counts_the_table_once():
    untied = count_params(2, 64, 4, 2, 16, 100, 128)
    tied = count_params(2, 64, 4, 2, 16, 100, 128, tied_embeddings=True)
    assert untied - tied == 100 * 64


def test_profile_for_prefers_the_manifest_architecture():
    arch = Architecture(
        params=1000, layers=2, hidden_size=64, heads=4, kv_heads=2, head_dim=16, vocab_size=100
    )
    profile = profile_for(ModelSpec(name="m", source="random:llama-3-8b", architecture=arch, dtype="float16"))
    assert (profile.params, profile.layers, profile.kv_bytes_per_token) == (1000, 2, 2 * 2 * 2 * 16 * 2)


def test_profile_for_random_preset_and_config_json(tmp_path):
    tiny = profile_for(ModelSpec(name="tiny", source="random:tiny", dtype="float32"))
    assert tiny.layers == PRESETS["tiny"].layers and tiny.dtype == "float32"
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B))
    qwen = profile_for(ModelSpec(name="q", source=str(tmp_path), dtype="bfloat16"))
    assert (qwen.layers, qwen.kv_heads, qwen.head_dim) == (36, 8, 128)
    with pytest.raises(ValueError, match=r"config\.json"):
        profile_for(ModelSpec(name="x", source=str(tmp_path / "missing")))
    with pytest.raises(KeyError, match="unknown model preset"):
        profile_for(ModelSpec(name="x", source="random:nope"))


def test_catalog_covers_every_accelerator_and_prices_resolve():
    assert {"H100-SXM", "H100-PCIe", "H200", "A100-40GB", "A100-80GB", "L40S", "L4", "CPU"} == set(CATALOG)
    from goodput.crds.inferenceservice import AcceleratorPool

    assert price_of(AcceleratorPool(type="L40S")) == CATALOG["L40S"].price_per_hour
    assert price_of(AcceleratorPool(type="L40S", price_per_hour=0.9)) == 0.9
    with pytest.raises(KeyError):
        accelerator("TPU")


def test_llama_3_8b_batch_1_tpot_on_h100_matches_public_figure():
    # 16 GB of bf16 weights streamed at ~2.6-2.7 TB/s effective: 6-7 ms per token at batch 1.
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    assert 6.0e-3 <= float(model.decode_time(1, 512)) <= 7.5e-3


def test_decode_step_is_weights_plus_kv_over_bandwidth():
    model = StepModel(PRESETS["llama-3-8b"], accelerator("A100-80GB"))
    acc, profile = model.accelerator, model.profile
    kv_tokens = 64 * 2000
    expected = (
        acc.step_overhead_s
        + (profile.weight_bytes + kv_tokens * profile.kv_bytes_per_token) / acc.effective_bandwidth
    )
    assert float(model.step_time(64, 0.0, kv_tokens)) == pytest.approx(expected, rel=1e-9)


def test_large_prefill_is_compute_bound():
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    tokens = 8192
    flops = tokens * 2 * PRESETS["llama-3-8b"].params
    floor = flops / model.accelerator.effective_flops
    assert floor * 0.85 < float(model.prefill_time(tokens)) < floor * 1.3


def test_chunked_prefill_costs_at_least_one_pass_and_grows_with_chunks():
    model = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    whole = float(model.prefill_time(4096))
    chunked = float(model.prefill_time(4096, 512))
    assert chunked > whole  # each chunk re-streams the weights and pays the step overhead
    times = np.asarray(model.prefill_time(np.array([100, 600, 1100, 4096]), 512))
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(chunked)


def test_tensor_parallel_splits_memory_but_pays_all_reduce():
    one = StepModel(PRESETS["llama-3-70b"], accelerator("H100-SXM"), 4)
    two = StepModel(PRESETS["llama-3-70b"], accelerator("H100-SXM"), 8)
    assert two.weight_bytes_per_device == pytest.approx(one.weight_bytes_per_device / 2)
    assert float(two.kv_capacity_tokens(64, 512)) > 2 * float(one.kv_capacity_tokens(64, 512))
    t4, t8 = float(one.decode_time(1, 1000)), float(two.decode_time(1, 1000))
    assert t4 / 2 < t8 < t4  # faster, but not twice as fast: two all-reduces per layer
    no_tp = StepModel(PRESETS["llama-3-8b"], accelerator("L40S")).cost
    assert no_tp[DECODE_SERIAL] == no_tp[PREFILL_SERIAL] == 0.0  # no all-reduce on one device


def test_kv_capacity_fills_exactly_the_usable_memory():
    model = StepModel(PRESETS["llama-3-8b"], accelerator("L40S"))
    capacity = float(model.kv_capacity_tokens(32, 512))
    used = float(model.memory_bytes(capacity, 32, 512))
    acc = model.accelerator
    assert used == pytest.approx(acc.memory_bytes * acc.memory_utilisation)
    too_big = StepModel(PRESETS["llama-3-70b"], accelerator("L4"))
    assert float(too_big.kv_capacity_tokens(1, 512)) < 0


def test_calibration_factors_scale_their_own_phase():
    base = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"))
    slow_decode = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"), tpot_factor=2.0)
    slow_prefill = StepModel(PRESETS["llama-3-8b"], accelerator("H100-SXM"), ttft_factor=3.0)
    decode = float(base.step_time(32, 0.0, 32_000))
    mixed = float(base.step_time(32, 512.0, 32_000))
    assert float(slow_decode.step_time(32, 0.0, 32_000)) == pytest.approx(2 * decode)
    assert float(slow_prefill.step_time(32, 0.0, 32_000)) == pytest.approx(decode)
    assert float(slow_prefill.step_time(32, 512.0, 32_000)) == pytest.approx(decode + 3 * (mixed - decode))


def test_step_time_broadcasts_over_grids():
    model = StepModel(PRESETS["qwen2.5-0.5b"], accelerator("L4"))
    n = np.arange(4)[:, None]
    grid = np.asarray(model.step_time(n, np.array([0.0, 256.0])[None, :], n * 1000.0))
    assert grid.shape == (4, 2)
    assert grid[0, 0] == 0.0  # nothing to do, no step
    assert np.all(np.diff(grid[1:, 0]) > 0)  # more sequences, more KV to read
    assert np.all(grid[:, 1] > grid[:, 0])  # a prefill chunk slows the step


def test_the_operator_knows_exactly_the_worker_presets():
    presets = pytest.importorskip("goodput.worker_image.presets")
    assert set(presets.PRESETS) == WORKER_PRESETS


@pytest.mark.parametrize("name", sorted(WORKER_PRESETS))
def test_random_presets_match_the_worker(name):
    presets = pytest.importorskip("goodput.worker_image.presets")
    worker = from_config(presets.preset_config(name), name)
    mine = PRESETS[name]
    assert (worker.params, worker.layers, worker.kv_bytes_per_token // worker.bytes_per_element) == (
        mine.params,
        mine.layers,
        mine.kv_bytes_per_token // mine.bytes_per_element,
    )
