"""Random presets: seeded, loadable by transformers under the same names, with a byte tokenizer."""

from __future__ import annotations

import transformers

from goodput.worker_image import presets
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.sampling import SamplingParams


def test_tiny_preset_matches_transformers_with_the_same_weights(hf_greedy, random_prompts) -> None:
    config = presets.preset_config("tiny")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    hf.load_state_dict(presets.random_weights(config, seed=7))
    engine = LLMEngine(EngineConfig(model="random:tiny", seed=7, max_model_len=128, num_kv_blocks=64))
    prompts = random_prompts([9, 30], config["vocab_size"])
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    assert engine.generate(prompts, params) == [hf_greedy(hf, p, 8) for p in prompts]


def test_presets_are_seeded_and_shaped() -> None:
    small = presets.preset_config("bench-small")
    weights = presets.random_weights(small, seed=0)
    params = sum(t.numel() for t in weights.values())
    assert 50e6 < params < 60e6
    tiny = presets.preset_config("tiny")
    a, b = presets.random_weights(tiny, 1), presets.random_weights(tiny, 1)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (presets.random_weights(tiny, 2)["lm_head.weight"] == a["lm_head.weight"]).all()


def test_byte_tokenizer_round_trip_and_chat_template() -> None:
    engine = LLMEngine(EngineConfig(model="random:tiny", max_model_len=64, num_kv_blocks=8))
    tok = engine.tokenizer
    assert tok.decode(tok.encode("héllo wörld")) == "héllo wörld"
    assert tok.eos_token_id == 257 and tok.model_name == "random:tiny"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert "hi" in prompt and prompt.endswith("<|assistant|>\n")
