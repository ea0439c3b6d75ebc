"""The real-stack routing benchmark's load: the Mooncake conversations' prefix structure, scaled to a CPU model."""

from __future__ import annotations

from bench.routing_real import MAX_MODEL_LEN, conversations, prefix_load


def test_only_multi_turn_conversations_in_trace_order() -> None:
    blocks = [[0, 1, 2], [0, 5], [0, 1, 2, 3, 4], [0, 7, 8], [0, 5, 6], [0, 9]]
    assert conversations(blocks, 1) == [0, 2]  # the first to open: blocks 0, 1
    assert conversations(blocks, 5) == [0, 1, 2, 4]  # 7 and 9 open conversations of one turn


def test_later_turns_share_their_earlier_turns_prefix_and_phases_share_nothing() -> None:
    first, second = prefix_load(5, 2.0, 16, salt=0), prefix_load(5, 2.0, 16, salt=1)
    assert len(first) == len(second) > 5
    assert all(len(a.prompt) == a.prompt_tokens <= MAX_MODEL_LEN - a.output_tokens for a in first)
    assert all(a.prompt_tokens % 16 == 0 or a.prompt_tokens == MAX_MODEL_LEN - a.output_tokens for a in first)

    def reused_blocks(i: int) -> int:
        """Blocks of arrival i's prompt that an earlier arrival began with."""
        prompt = first[i].prompt
        return max(
            next((k for k in range(len(prompt) // 16, 0, -1) if prompt[: 16 * k] == e.prompt[: 16 * k]), 0)
            for e in first[:i]
        )

    reused = [reused_blocks(i) for i in range(1, len(first))]
    assert min(reused) >= 1  # block 0: everyone's system prompt
    assert sum(r > 1 for r in reused) >= len(first) // 2  # most turns continue an earlier one
    assert first[0].prompt[:16] != second[0].prompt[:16]  # another phase, other ids
    assert [a.at_s for a in first] == sorted(a.at_s for a in first)
