"""Greedy outputs match Hugging Face transformers token for token, whatever the engine does underneath:
mixed-length batches, chunked prefill, prefix-cache hits and preemption by recompute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
VOCAB = 320


def engine_for(folder: Path, **kw: object) -> LLMEngine:
    args: dict = {"model": str(folder), "max_model_len": 128, "block_size": 4, "num_kv_blocks": 256} | kw
    return LLMEngine(EngineConfig(**args))


@pytest.fixture
def expected(hf_greedy):
    def run(model: torch.nn.Module, prompts: list[list[int]]) -> list[list[int]]:
        return [hf_greedy(model, p, GREEDY.max_tokens) for p in prompts]

    return run


def test_mixed_lengths_batch(hf_model_dir, random_prompts, expected) -> None:
    folder, model = hf_model_dir
    prompts = random_prompts([1, 5, 17, 33, 9, 60], VOCAB)
    assert engine_for(folder).generate(prompts, GREEDY) == expected(model, prompts)


def test_chunked_prefill(hf_model_dir, random_prompts, expected) -> None:
    folder, model = hf_model_dir
    prompts = random_prompts([40, 3, 27, 51], VOCAB, seed=1)
    engine = engine_for(folder, max_num_batched_tokens=7)
    assert engine.generate(prompts, GREEDY) == expected(model, prompts)


def test_prefix_cache_hits(hf_model_dir, random_prompts, expected) -> None:
    folder, model = hf_model_dir
    shared = random_prompts([22], VOCAB, seed=2)[0]
    prompts = [shared + tail for tail in random_prompts([0, 5, 11, 2], VOCAB, seed=3)]
    engine = engine_for(folder, max_num_batched_tokens=16)
    first = engine.generate(prompts[:1], GREEDY)
    rest = engine.generate(prompts[1:], GREEDY)
    assert engine.stats().prefix_cache_hits > 0
    assert first + rest == expected(model, prompts)


def test_preemption_by_recompute(hf_model_dir, random_prompts, expected) -> None:
    folder, model = hf_model_dir
    prompts = random_prompts([30, 25, 35, 20, 28, 33], VOCAB, seed=4)
    engine = engine_for(folder, max_model_len=64, num_kv_blocks=24, enable_prefix_caching=False)
    assert engine.generate(prompts, GREEDY) == expected(model, prompts)
    assert engine.stats().num_preemptions > 0
    assert engine.stats().num_free_blocks == 24


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


@pytest.mark.parametrize(
    "scaling", [{"rope_type": "linear", "factor": 2.0}, LLAMA3], ids=["linear", "llama3"]
)
def test_rope_scaling_variants(
    tmp_path: Path, scaling: dict, hf_tiny_model, random_prompts, expected
) -> None:
    model = hf_tiny_model("llama", rope_parameters={"rope_theta": 10000.0, **scaling})
    model.save_pretrained(tmp_path)
    prompts = random_prompts([70, 8], VOCAB, seed=5)
    assert engine_for(tmp_path).generate(prompts, GREEDY) == expected(model, prompts)


def test_logprobs_match_transformers(hf_model_dir, random_prompts) -> None:
    folder, model = hf_model_dir
    prompts = random_prompts([6, 19, 2], VOCAB, seed=6)
    engine = engine_for(folder, max_num_batched_tokens=10)
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True, logprobs=3)
    for i, p in enumerate(prompts):
        engine.add_request(str(i), p, params)
    seen: dict[str, list[tuple[int, float, list[tuple[int, float]]]]] = {
        str(i): [] for i in range(len(prompts))
    }
    while engine.has_unfinished_requests():
        for out in engine.step():
            for tok, lp, top in zip(out.new_token_ids, out.new_logprobs, out.new_top_logprobs, strict=True):
                seen[out.request_id].append((tok, lp, top))
    for i, prompt in enumerate(prompts):
        ids = list(prompt)
        for tok, lp, top in seen[str(i)]:
            with torch.no_grad():
                ref = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            assert tok == int(ref.argmax())
            assert lp == pytest.approx(float(ref[tok]), abs=1e-4)
            assert [t for t, _ in top] == ref.topk(3).indices.tolist()
            ids.append(tok)


def test_dynamic_ntk_rescales_only_past_the_trained_length() -> None:
    from goodput.worker_image.model import ModelConfig, rope_inv_freq

    cfg = ModelConfig(
        vocab_size=8, hidden_size=64, intermediate_size=8, num_layers=1, num_heads=4, num_kv_heads=4,
        head_dim=16, max_position_embeddings=128, rope_scaling={"rope_type": "dynamic", "factor": 4.0},
    )  # fmt: skip
    plain, _ = rope_inv_freq(ModelConfig(**{**vars(cfg), "rope_scaling": None}), 128)
    assert torch.equal(rope_inv_freq(cfg, 128)[0], plain)
    longer, _ = rope_inv_freq(cfg, 512)
    assert longer[0] == plain[0] and (longer[1:] < plain[1:]).all()
