"""What the engine benchmarks share: a seeded random-token workload, greedy sampling, and draining
transformers' continuous-batching manager with a length per request, and its static batches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from worker_image import presets
from worker_image.sampling import SamplingParams


@dataclass
class Workload:
    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def output_tokens(self) -> int:
        return sum(self.output_lens)


def workload(
    preset: str, n: int, prompt_range: tuple[int, int], output_range: tuple[int, int], seed: int
) -> Workload:
    """`n` prompts of random non-special tokens and output lengths, both uniform in their ranges."""
    rng = random.Random(seed)
    low, vocab = presets.BYTE_TOKENS["pad_token_id"] + 1, presets.PRESETS[preset]["vocab_size"]
    prompts = [[rng.randrange(low, vocab) for _ in range(rng.randint(*prompt_range))] for _ in range(n)]
    return Workload(prompts, [rng.randint(*output_range) for _ in range(n)])


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


def drain_continuous(manager: Any, w: Workload) -> int:
    """Submit every request to a transformers continuous-batching manager and wait for all; returns the
    output tokens generated. `generate_batch` takes one max_new_tokens for all, hence the manager."""
    ids = [
        manager.add_request(p, max_new_tokens=n, eos_token_id=[])
        for p, n in zip(w.prompts, w.output_lens, strict=True)
    ]
    generated = 0
    for rid in ids:
        while (result := manager.get_result(request_id=rid, timeout=600)) is None or not result.is_finished():
            pass
        if result.error is not None:
            raise RuntimeError(result.error)
        generated += len(result.generated_tokens)
    return generated


def generate_static(model: Any, w: Workload, batch_size: int, device: str = "cpu") -> None:
    """transformers `generate` on arrival-order batches, left padded, each until its longest output is done."""
    pad = presets.BYTE_TOKENS["pad_token_id"]
    with torch.inference_mode():
        for b in range(0, len(w.prompts), batch_size):
            prompts, outs = w.prompts[b : b + batch_size], w.output_lens[b : b + batch_size]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(outs),
                min_new_tokens=max(outs),
                do_sample=False,
            )
            assert out.shape[1] == width + max(outs)
