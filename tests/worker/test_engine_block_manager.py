"""Block allocator: reference counts, prefix matching, hash-collision safety, eviction order."""

from __future__ import annotations

from goodput.worker_image.block_manager import BlockManager
from goodput.worker_image.sampling import Priority, SamplingParams
from goodput.worker_image.sequence import Sequence


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, tokens, SamplingParams(), Priority.INTERACTIVE, 0.0)


def admit(bm: BlockManager, s: Sequence) -> None:
    """What the scheduler does: take cached blocks, allocate the rest, compute everything, hash."""
    cached, hashes = bm.match_prefix(s)
    assert bm.can_allocate(bm.blocks_needed(s, len(s)) - len(cached), cached)
    bm.allocate_prefix(s, cached, hashes)
    bm.grow(s, len(s))
    s.num_computed_tokens = len(s)
    bm.commit(s)


def test_ref_counts_and_sharing() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(list(range(10)), "a")
    admit(bm, a)
    assert len(a.block_table) == 3 and bm.num_free_blocks == 5
    b = seq([*range(9), 99], "b")
    admit(bm, b)
    assert b.block_table[:2] == a.block_table[:2]  # two full blocks shared
    assert b.num_computed_tokens == 10 and b.block_table[2] != a.block_table[2]
    assert [bm.blocks[i].ref_count for i in a.block_table] == [2, 2, 1]
    assert bm.hits == 8 and bm.queries == 20
    bm.free(a)
    assert [bm.blocks[i].ref_count for i in b.block_table] == [1, 1, 1]
    bm.free(b)
    assert bm.num_free_blocks == 8 and bm.usage() == 0.0


def test_last_token_is_never_served_from_cache() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    admit(bm, seq(list(range(8)), "a"))
    cached, _ = bm.match_prefix(seq(list(range(8)), "b"))
    assert len(cached) == 1  # the second block holds the last token, which must be recomputed


def test_hash_collision_is_a_miss() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.hash_fn = lambda parent, tokens: b"same"  # every block collides
    admit(bm, seq([1, 2, 3, 4, 5], "a"))
    other = seq([9, 9, 9, 9, 5], "b")
    cached, _ = bm.match_prefix(other)
    assert cached == []
    same = seq([1, 2, 3, 4, 7], "c")
    assert len(bm.match_prefix(same)[0]) == 1


def test_freed_cached_blocks_evicted_least_recently_used() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    old, new = seq([1, 2, 3], "old"), seq([5, 6, 7], "new")
    admit(bm, old)
    admit(bm, new)
    bm.free(old)
    bm.free(new)
    assert bm.num_free_blocks == 4
    # Two fresh blocks come from the never-hashed pool, the next ones evict the oldest freed first.
    filler = seq([8, 8, 8, 8, 8, 8], "filler")
    cached, _ = bm.match_prefix(filler)
    bm.allocate_prefix(filler, cached, [])
    bm.grow(filler, 6)
    assert bm.match_prefix(seq([1, 2, 0], "x"))[0] == []  # old's block was evicted
    assert len(bm.match_prefix(seq([5, 6, 0], "y"))[0]) == 1  # new's block survives


def test_cache_hit_revives_a_freed_block() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq([1, 2, 3], "a")
    admit(bm, a)
    bm.free(a)
    b = seq([1, 2, 4], "b")
    admit(bm, b)
    assert bm.blocks[b.block_table[0]].ref_count == 1 and b.num_computed_tokens == 3
    assert bm.num_free_blocks == 2


def test_prefix_caching_off() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    admit(bm, seq([1, 2, 3], "a"))
    assert bm.match_prefix(seq([1, 2, 3], "b")) == ([], [])


def test_a_long_conversation_outlives_a_short_one_freed_later() -> None:
    bm = BlockManager(num_blocks=6, block_size=2)
    long, short = seq([1, 2, 3, 4, 5, 6, 7], "long"), seq([8, 9, 0], "short")
    admit(bm, long)
    admit(bm, short)
    bm.free(long)
    bm.free(short)
    filler = seq([4, 4, 4, 4, 4], "filler")  # two never-hashed blocks and one evicted: short's, not long's
    bm.allocate_prefix(filler, *bm.match_prefix(filler))
    bm.grow(filler, 5)
    assert bm.match_prefix(seq([8, 9, 0], "x"))[0] == []
    assert len(bm.match_prefix(seq([1, 2, 3, 4, 5, 6, 0], "y"))[0]) == 3
