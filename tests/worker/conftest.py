"""Shared fixtures for the engine tests: tiny random Hugging Face models saved to disk, and a reference
greedy decoder that runs transformers directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ARCHS = ("llama", "qwen2", "qwen3")


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(1)


def _hf_tiny_model(arch: str, **overrides: object) -> torch.nn.Module:
    """A tiny transformers model with every weight random (norms and biases too)."""
    import transformers

    common = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=2,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if arch == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    elif arch == "qwen2":
        common["tie_word_embeddings"] = True  # like Qwen2.5-0.5B
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=32, **common))
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.1 * noise)
    return model.eval()


@pytest.fixture(scope="session", params=ARCHS)
def hf_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(folder, transformers model) for each architecture, saved once per session."""
    model = _hf_tiny_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return Path(folder), model


def _hf_greedy(model: torch.nn.Module, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding by full recomputation: slow, but obviously what the model says."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


def _random_prompts(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


@pytest.fixture(scope="session")
def hf_tiny_model():
    return _hf_tiny_model


@pytest.fixture(scope="session")
def hf_greedy():
    return _hf_greedy


@pytest.fixture(scope="session")
def random_prompts():
    return _random_prompts
