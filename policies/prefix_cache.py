"""A replica's prefix cache as an LRU over prompt blocks: the simulator's model of what a worker keeps, and the
router's estimate of what each replica holds.

Blocks are identified by chained hashes (a block's id depends on every block before it, as in vLLM's and the
Mooncake trace's prefix hashing), so a hit is the longest run of leading blocks present, never a block in the
middle of an unrelated prompt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """LRU set of block hashes, bounded by `capacity_blocks` (the KV pool in blocks)."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be ≥ 0, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def matched_blocks(self, blocks: Sequence[int]) -> int:
        """How many leading blocks of a prompt are cached; reads only (does not refresh recency)."""
        n = 0
        for block in blocks:
            if block not in self._blocks:
                break
            n += 1
        return n

    def insert(self, blocks: Sequence[int]) -> int:
        """Record that a replica has computed these blocks (a prefill); returns how many were already cached.

        Every block becomes most recently used, the first block last, so a prompt's head outlives its tail (a
        later prompt sharing only the head still hits). The oldest blocks are evicted beyond capacity.
        """
        hit = self.matched_blocks(blocks)
        if self.capacity_blocks == 0:
            return hit
        for block in reversed(blocks[: self.capacity_blocks]):
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
        return hit

    def clear(self) -> None:
        """A replica that restarted (or left) keeps nothing."""
        self._blocks.clear()
