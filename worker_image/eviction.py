"""Which cached prefix block a full KV pool gives up first: GreedyDual over the length of the prompts a block
served, the one rule the worker's block manager keeps and the simulator's (and the router's) model of it.

Least recently used treats every cached block alike, but what a hit saves is the prefill of the prompt that
shares the block: nothing that matters for a short prompt, which meets its TTFT target anyway, and seconds for
the next turn of a long conversation, the requests at the tail of the TTFT distribution. So a block is worth
the clock plus the length in blocks of the longest prompt it was part of, and the block of least worth goes
first; the clock rises to the worth of each block evicted (Cao and Irani's GreedyDual), so a long prompt's
blocks outlive short ones for a while, not forever, and among equal worth the least recently released goes
first. A prompt's blocks are released tail first, so its prefix outlives its tail.
"""

from __future__ import annotations

import heapq
import itertools

EvictionKey = tuple[float, int]  # (worth, order of release): the lowest goes first


class EvictionQueue:
    """Blocks that may be evicted, lowest worth first. A block keeps its worth while it is in use and released
    again (a shared prefix keeps the worth of the longest prompt that used it), until it is evicted."""

    def __init__(self) -> None:
        self.clock = 0.0
        self._worth: dict[int, float] = {}  # every block released and not evicted since, in use or not
        self._keys: dict[int, EvictionKey] = {}  # the blocks that may be evicted now
        self._heap: list[tuple[float, int, int]] = []  # keys with their block; stale ones skipped
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, block: int) -> bool:
        return block in self._keys

    def release(self, block: int, prompt_blocks: int) -> None:
        """`block`, part of a prompt of `prompt_blocks` blocks, may be evicted from now on."""
        worth = max(self.clock + prompt_blocks, self._worth.get(block, 0.0))
        self._worth[block] = worth
        key = (worth, next(self._order))
        self._keys[block] = key
        heapq.heappush(self._heap, (*key, block))
        if len(self._heap) > 2 * len(self._keys) + 64:  # mostly stale keys: rebuild from the live ones
            self._heap = [(*k, b) for b, k in self._keys.items()]
            heapq.heapify(self._heap)

    def take(self, block: int) -> None:
        """`block` is in use again (a hit): it may not be evicted until released."""
        del self._keys[block]

    def evict(self) -> int:
        """The block of least worth, forgotten; raises IndexError when none may be evicted."""
        while True:
            worth, order, block = heapq.heappop(self._heap)
            if self._keys.get(block) == (worth, order):
                del self._keys[block], self._worth[block]
                self.clock = worth
                return block

    def clear(self) -> None:
        """Forget every block (a restarted replica keeps nothing)."""
        self.clock = 0.0
        self._worth.clear()
        self._keys.clear()
        self._heap.clear()
