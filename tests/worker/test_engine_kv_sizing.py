"""The KV pool on a GPU takes what is left of `gpu_memory_utilization` of the device after the weights,
everything else in use, and the warm-up's activation peak; the arithmetic and the warm-up step are checked
here, the measurement itself in test_engine_gpu.py."""

from __future__ import annotations

import pytest

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.model_runner import ModelRunner, kv_cache_blocks, warm_up_batch

GIB = 2**30


@pytest.mark.parametrize(
    ("total", "free", "activations", "utilization", "block", "blocks"),
    [
        (80 * GIB, 79 * GIB, 1 * GIB, 0.9, GIB // 4, (72 - 1 - 1) * 4),  # 1 GiB in use, 1 GiB of activations
        (80 * GIB, 79 * GIB, 0, 1.0, GIB // 4, 79 * 4),  # no activations: all that is free
        (80 * GIB, 40 * GIB, 0, 0.9, GIB, 32),  # another process holds 40 GiB
        (80 * GIB, 79 * GIB, 1 * GIB, 0.9, 3 * GIB, 23),  # a partial block is not allocated
        (80 * GIB, 10 * GIB, 4 * GIB, 0.9, GIB, 0),  # over budget already: none, never negative
    ],
)
def test_kv_cache_blocks(
    total: int, free: int, activations: int, utilization: float, block: int, blocks: int
) -> None:
    assert kv_cache_blocks(total, free, activations, utilization, block) == blocks


@pytest.mark.parametrize(
    ("max_num_seqs", "max_num_batched_tokens", "prompts", "length"),
    [(6, 40, 6, 6), (64, 20, 20, 1), (2, 4096, 2, 128)],  # split budget; one token each; max_model_len caps
)
def test_warm_up_batch_is_the_largest_step(
    max_num_seqs: int, max_num_batched_tokens: int, prompts: int, length: int
) -> None:
    """It runs as a forward pass on a scratch cache just large enough, one logits row per sequence."""
    config = EngineConfig(
        model="random:tiny",
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=128,
        block_size=4,
        num_kv_blocks=64,
        cpu_threads=1,
    )
    batch = warm_up_batch(config)
    assert [len(s.tokens) for s in batch] == [length] * prompts and all(s.samples for s in batch)
    blocks = [b for s in batch for b in s.block_table]
    assert sorted(blocks) == list(range(len(blocks))) and len(blocks) == prompts * -(-length // 4)
    runner = ModelRunner(config)
    runner._allocate_kv(len(blocks))
    logits = runner._forward(runner._prepare(batch))
    assert logits is not None and logits.shape == (prompts, runner.model_config.vocab_size)
