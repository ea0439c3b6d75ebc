"""The KV pool's eviction order: least worth first, worth the length of the longest prompt a block served plus
a clock that rises with each eviction; among equals the least recently released first."""

from __future__ import annotations

import pytest

from goodput.worker_image.eviction import EvictionQueue


def released(*blocks: tuple[int, int]) -> EvictionQueue:
    queue = EvictionQueue()
    for block, prompt_blocks in blocks:
        queue.release(block, prompt_blocks)
    return queue


@pytest.mark.parametrize(
    ("blocks", "order"),
    [
        # (block, prompt length in blocks), tails released first: a short prompt's blocks go before a long one's
        (((2, 8), (1, 8), (4, 2), (3, 2)), [4, 3, 2, 1]),
        # equal lengths: the least recently released first
        (((2, 2), (1, 2), (4, 2), (3, 2)), [2, 1, 4, 3]),
        # a shared head keeps the worth of the longest prompt that used it
        (((2, 9), (1, 9), (1, 1), (3, 3)), [3, 2, 1]),
    ],
)
def test_eviction_order(blocks: tuple[tuple[int, int], ...], order: list[int]) -> None:
    queue = released(*blocks)
    assert [queue.evict() for _ in range(len(order))] == order
    assert len(queue) == 0
    with pytest.raises(IndexError):
        queue.evict()


def test_the_clock_lets_recent_short_prompts_outlive_old_long_ones() -> None:
    queue = released((1, 5), (2, 3), (3, 3), (4, 3))
    assert queue.evict() == 2  # worth 3: the clock rises to 3
    queue.release(5, 3)  # worth 6 now, above the long prompt's 5
    assert [queue.evict() for _ in range(4)] == [3, 4, 1, 5]


def test_a_block_in_use_is_not_evicted_and_keeps_its_worth() -> None:
    queue = released((1, 9), (2, 1))
    queue.take(1)
    assert 1 not in queue and len(queue) == 1
    assert queue.evict() == 2
    queue.release(1, 1)  # released by a short prompt: still worth 9
    queue.release(3, 4)  # worth clock 1 + 4
    assert [queue.evict() for _ in range(2)] == [3, 1]


def test_stale_keys_are_compacted() -> None:
    queue = EvictionQueue()
    for _ in range(1000):
        queue.release(1, 2)
        queue.take(1)
    queue.release(1, 2)
    assert len(queue._heap) < 100
    assert queue.evict() == 1
