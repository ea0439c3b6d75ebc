"""What the engine benchmarks share: a seeded random-token workload, greedy sampling, device timing and
copy bandwidth, and draining transformers' continuous-batching manager with a length per request, and
its static batches."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from goodput.worker_image import presets
from goodput.worker_image.sampling import SamplingParams


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


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a host clock read after it measures the work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str, nbytes: int, iters: int = 20) -> float:
    """Bytes per second of a device-to-device copy, counting each byte read once and written once: the
    memory-bandwidth ceiling a decode step's weight reads are held against."""
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        dst.copy_(src)
    synchronize(device)
    return 2 * nbytes * iters / (time.perf_counter() - start)


def continuous_batching_config(page_size: int | None = None, **settings: Any) -> Any:
    """transformers' ContinuousBatchingConfig across the versions a bench meets (the GPU machine's may be
    older than this one's): the page size is `page_size` in newer versions and `block_size` in older ones,
    and `auto_switch_to_flash` exists only where transformers would switch on its own. Any other setting
    the installed version lacks is an error naming it."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    if page_size is not None:
        settings["page_size" if "page_size" in fields else "block_size"] = page_size
    if "auto_switch_to_flash" not in fields:
        settings.pop("auto_switch_to_flash", None)
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"this transformers' ContinuousBatchingConfig has no {', '.join(unknown)}")
    return ContinuousBatchingConfig(**settings)


def drain_continuous(manager: Any, w: Workload, timeout_s: float = 600.0) -> int:
    """Submit every request to a transformers continuous-batching manager and wait for all; returns the
    output tokens generated. `generate_batch` takes one max_new_tokens for all, hence the manager. A
    manager whose generation thread died answers None for ever: that is an error, not a wait."""
    ids = [
        manager.add_request(p, max_new_tokens=n, eos_token_id=[])
        for p, n in zip(w.prompts, w.output_lens, strict=True)
    ]
    deadline = time.monotonic() + timeout_s
    generated = 0
    for rid in ids:
        while (result := manager.get_result(request_id=rid, timeout=1)) is None or not result.is_finished():
            if result is None and not manager.is_running():
                raise RuntimeError(f"transformers' continuous batching stopped before request {rid} finished")
            if time.monotonic() > deadline:
                raise TimeoutError(f"transformers' continuous batching took over {timeout_s:.0f} s")
        if result.error is not None:
            raise RuntimeError(result.error)
        generated += len(result.generated_tokens)
    return generated


def continuous_result(w: Workload, generated: int, elapsed: float) -> dict[str, float | int]:
    """What a transformers continuous-batching run reports: it may stop short of the requested tokens."""
    return {
        "seconds": elapsed,
        "output_tokens": generated,
        "requested_output_tokens": w.output_tokens,
        "output_tokens_per_s": generated / elapsed,
    }


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
