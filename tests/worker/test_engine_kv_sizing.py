"""The KV pool on a GPU takes what is left of `gpu_memory_utilization` of the device after the weights,
everything else in use, and the warm-up's activation peak; the sizing arithmetic is checked here."""

from __future__ import annotations

import pytest

from worker_image.model_runner import kv_cache_blocks

GIB = 2**30


@pytest.mark.parametrize(
    ("total", "free", "peak", "current", "utilization", "block", "blocks"),
    [
        (
            80 * GIB,
            79 * GIB,
            2 * GIB,
            1 * GIB,
            0.9,
            GIB // 4,
            (72 - 1 - 1) * 4,
        ),  # 1 GiB used, 1 GiB of activations
        (80 * GIB, 79 * GIB, 1 * GIB, 1 * GIB, 1.0, GIB // 4, 79 * 4),  # no activation peak: all that is free
        (80 * GIB, 40 * GIB, 1 * GIB, 1 * GIB, 0.9, GIB, 32),  # another process holds 40 GiB
        (80 * GIB, 79 * GIB, 2 * GIB, 1 * GIB, 0.9, 3 * GIB, 23),  # a partial block is not allocated
        (80 * GIB, 10 * GIB, 5 * GIB, 1 * GIB, 0.9, GIB, 0),  # over budget already: none, never negative
    ],
)
def test_kv_cache_blocks(
    total: int, free: int, peak: int, current: int, utilization: float, block: int, blocks: int
) -> None:
    assert kv_cache_blocks(total, free, peak, current, utilization, block) == blocks
