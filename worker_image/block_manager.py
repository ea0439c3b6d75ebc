"""Paged KV-cache bookkeeping: a ref-counted block allocator with hash-based prefix caching.

A full block is identified by a chained hash of (parent block hash, its token ids), so equal hashes mean
equal prefixes. The block also keeps its parent hash and token ids, and a lookup compares them, so a hash
collision can never hand one request another request's KV. Freed blocks that carry a hash stay reusable
until memory is needed; they are then evicted in `eviction.EvictionQueue`'s order (least worth first: the
blocks of short prompts before those of long ones, the least recently freed first among equals).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np

from goodput.worker_image.eviction import EvictionQueue
from goodput.worker_image.sequence import Sequence

ROOT_HASH = b""


def block_hash(parent: bytes, token_ids: Seq[int]) -> bytes:
    return hashlib.blake2b(parent + np.asarray(token_ids, dtype=np.int64).tobytes(), digest_size=16).digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    parent_hash: bytes = ROOT_HASH
    token_ids: tuple[int, ...] = field(default_factory=tuple)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))  # ref 0, no hash
        self.evictable = EvictionQueue()  # ref 0, hashed
        self.hash_to_block: dict[bytes, int] = {}
        self.hash_fn: Callable[[bytes, Seq[int]], bytes] = block_hash
        self.queries = 0
        self.hits = 0

    @property
    def num_total_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids) + len(self.evictable)

    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_total_blocks

    def _lookup(self, parent: bytes, token_ids: tuple[int, ...]) -> tuple[bytes, int | None]:
        h = self.hash_fn(parent, token_ids)
        block_id = self.hash_to_block.get(h)
        if block_id is not None:
            b = self.blocks[block_id]
            if b.token_ids != token_ids or b.parent_hash != parent:
                return h, None  # a hash collision: treat as a miss
        return h, block_id

    def match_prefix(self, seq: Sequence) -> tuple[list[int], list[bytes]]:
        """Cached blocks covering the longest cached prefix, leaving at least the last token to compute."""
        ids: list[int] = []
        hashes: list[bytes] = []
        if not self.enable_prefix_caching:
            return ids, hashes
        parent, bs = ROOT_HASH, self.block_size
        for i in range((len(seq) - 1) // bs):
            parent, block_id = self._lookup(parent, tuple(seq.token_ids[i * bs : (i + 1) * bs]))
            if block_id is None:
                break
            ids.append(block_id)
            hashes.append(parent)
        return ids, hashes

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def can_allocate(self, n: int, reusing: Seq[int] = ()) -> bool:
        """Whether n fresh blocks fit after pinning `reusing` (cached blocks that may sit in the free pool)."""
        pinned_free = sum(1 for b in reusing if self.blocks[b].ref_count == 0)
        return n <= self.num_free_blocks - pinned_free

    def allocate_prefix(self, seq: Sequence, cached: list[int], hashes: list[bytes]) -> None:
        """Give a newly admitted sequence its cached prefix blocks and count the cache query."""
        for block_id in cached:
            b = self.blocks[block_id]
            if b.ref_count == 0:
                self.evictable.take(block_id)
            b.ref_count += 1
        seq.block_table = list(cached)
        seq.block_hashes = list(hashes)
        seq.num_computed_tokens = len(cached) * self.block_size
        self.queries += len(seq)
        self.hits += seq.num_computed_tokens

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Append enough blocks for the sequence to hold num_tokens; the caller checked can_allocate."""
        for _ in range(self.blocks_needed(seq, num_tokens)):
            seq.block_table.append(self._take_free())

    def _take_free(self) -> int:
        if self.free_ids:
            block_id = self.free_ids.popleft()
        else:
            block_id = self.evictable.evict()
            b = self.blocks[block_id]
            if self.hash_to_block.get(b.hash) == block_id:  # type: ignore[arg-type]
                del self.hash_to_block[b.hash]  # type: ignore[arg-type]
            b.hash, b.token_ids, b.parent_hash = None, (), ROOT_HASH
        self.blocks[block_id].ref_count = 1
        return block_id

    def commit(self, seq: Sequence) -> None:
        """Hash the blocks that computed tokens have filled so later requests can reuse them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            parent = seq.block_hashes[-1] if seq.block_hashes else ROOT_HASH
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = self.hash_fn(parent, tokens)
            seq.block_hashes.append(h)
            b = self.blocks[seq.block_table[i]]
            if b.hash is None and h not in self.hash_to_block:
                b.hash, b.parent_hash, b.token_ids = h, parent, tokens
                self.hash_to_block[h] = b.block_id

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; its cached blocks become evictable, worth its length, the tail
        block first so the prefix outlives it."""
        length = len(seq.block_table)
        for block_id in reversed(seq.block_table):
            b = self.blocks[block_id]
            b.ref_count -= 1
            if b.ref_count == 0:
                if b.hash is None:
                    self.free_ids.append(block_id)
                else:
                    self.evictable.release(block_id, length)
        seq.block_table = []
        seq.block_hashes = []
