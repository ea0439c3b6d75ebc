"""A replica's prefix cache as a set of prompt blocks bounded by its KV pool: the simulator's model of what a
worker keeps, and the router's estimate of what each replica holds. It evicts as the worker does
(`worker_image/eviction.py`: GreedyDual over the length of the prompts a block served).

Blocks are identified by chained hashes (a block's id depends on every block before it, as in vLLM's and the
Mooncake trace's prefix hashing), so a hit is the longest run of leading blocks present, never a block in the
middle of an unrelated prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from goodput.worker_image.eviction import EvictionQueue


class PrefixCache:
    """The block hashes a replica holds, at most `capacity_blocks` (the KV pool in blocks)."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be ≥ 0, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self._blocks = EvictionQueue()

    def __len__(self) -> int:
        return len(self._blocks)

    def matched_blocks(self, blocks: Sequence[int]) -> int:
        """How many leading blocks of a prompt are cached; reads only."""
        n = 0
        for block in blocks:
            if block not in self._blocks:
                break
            n += 1
        return n

    def insert(self, blocks: Sequence[int]) -> int:
        """Record that a replica has computed these blocks (a prefill); returns how many were already cached.

        The prompt's blocks take its length as their worth (a block already cached keeps a higher one), and
        blocks of least worth are evicted beyond capacity; within the prompt the tail goes before the head.
        """
        hit = self.matched_blocks(blocks)
        for block in reversed(blocks[: self.capacity_blocks]):
            self._blocks.release(block, len(blocks))
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.evict()
        return hit

    def clear(self) -> None:
        """A replica that restarted (or left) keeps nothing."""
        self._blocks.clear()
