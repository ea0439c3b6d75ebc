"""Scheduler policy: token budget, priority classes, preemption order, batch window, bounded queue."""

from __future__ import annotations

import pytest

from goodput.worker_image.block_manager import BlockManager
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine, QueueFullError
from goodput.worker_image.sampling import Priority, SamplingParams
from goodput.worker_image.scheduler import Scheduler
from goodput.worker_image.sequence import Sequence


def make(num_blocks: int = 64, **kw: object) -> Scheduler:
    config = EngineConfig(model="random:tiny", block_size=4, max_model_len=64, **kw)  # type: ignore[arg-type]
    return Scheduler(config, BlockManager(num_blocks, 4))


def seq(rid: str, n: int, t: float, priority: Priority = Priority.INTERACTIVE) -> Sequence:
    return Sequence(rid, list(range(1, n + 1)), SamplingParams(), priority, t)


def run(sched: Scheduler, now: float = 100.0) -> dict[str, int]:
    """Schedule one step and pretend the forward pass ran (each finished prompt gains a token)."""
    out = sched.schedule(now)
    for s, n in out.scheduled:
        s.num_computed_tokens += n
        if s.num_computed_tokens == len(s):
            s.token_ids.append(7)
    return {s.request_id: n for s, n in out.scheduled}


def test_chunked_prefill_shares_the_budget_with_decodes() -> None:
    sched = make(max_num_batched_tokens=10)
    sched.add(seq("a", 3, 0.0))
    assert run(sched) == {"a": 3}
    sched.add(seq("b", 25, 1.0))
    assert run(sched) == {"a": 1, "b": 9}
    assert run(sched) == {"a": 1, "b": 9}
    assert run(sched) == {"a": 1, "b": 7}
    assert run(sched) == {"a": 1, "b": 1}


def test_interactive_admitted_before_batch_and_max_num_seqs() -> None:
    sched = make(max_num_seqs=2)
    sched.add(seq("batch-old", 4, 0.0, Priority.BATCH))
    sched.add(seq("inter-1", 4, 1.0))
    sched.add(seq("inter-2", 4, 2.0))
    assert set(run(sched)) == {"inter-1", "inter-2"}
    assert sched.num_waiting == 1


def test_batch_requests_are_preempted_first() -> None:
    sched = make(num_blocks=4, max_num_batched_tokens=64)
    sched.add(seq("inter", 8, 1.0))
    sched.add(seq("batch", 8, 0.0, Priority.BATCH))
    assert set(run(sched)) == {"inter", "batch"}  # 2 blocks each, pool full
    assert run(sched) == {"inter": 1}  # inter's 9th token needs a third block: batch gives way
    assert sched.num_preemptions == 1
    assert [s.request_id for s in sched.waiting[Priority.BATCH]] == ["batch"]
    assert sched.waiting[Priority.BATCH][0].num_computed_tokens == 0  # recomputed later


def test_waiting_interactive_request_preempts_running_batch() -> None:
    sched = make(num_blocks=4, max_num_seqs=8)
    sched.add(seq("batch", 12, 0.0, Priority.BATCH))
    assert run(sched) == {"batch": 12}
    sched.add(seq("inter", 8, 1.0))
    assert run(sched) == {"inter": 8}
    assert sched.num_preemptions == 1


def test_newest_running_sequence_preempted_within_a_class() -> None:
    sched = make(num_blocks=6)
    for i in range(3):
        sched.add(seq(f"s{i}", 8, float(i), Priority.BATCH))
    assert len(run(sched)) == 3
    assert run(sched) == {"s0": 1, "s1": 1}
    assert [s.request_id for s in sched.waiting[Priority.BATCH]] == ["s2"]


def test_batch_window_holds_admission_until_it_closes_or_the_batch_fills() -> None:
    sched = make(batch_window_ms=50.0, max_num_seqs=3)
    sched.add(seq("a", 4, 10.0))
    out = sched.schedule(now=10.01)
    assert out.scheduled == [] and out.defer_until == pytest.approx(10.05)
    assert run(sched, now=10.06) == {"a": 4}
    sched.add(seq("b", 4, 11.0))
    sched.add(seq("c", 4, 11.0))
    assert run(sched, now=11.0) == {"a": 1, "b": 4, "c": 4}  # batch reaches the target: no wait


def test_bounded_waiting_queue_counts_free_batch_slots() -> None:
    """One batch slot and two waiting places hold three requests; a fourth gets in once a slot frees."""
    config = EngineConfig(
        model="random:tiny", max_model_len=64, num_kv_blocks=16, max_num_seqs=1, max_waiting=2
    )
    engine = LLMEngine(config)
    params = SamplingParams(max_tokens=2)
    for request_id in "abc":
        engine.add_request(request_id, [1, 2], params)
    with pytest.raises(QueueFullError):
        engine.add_request("d", [1, 2], params)
    engine.step()  # a takes the slot; b and c wait
    with pytest.raises(QueueFullError):
        engine.add_request("d", [1, 2], params)
    assert [o.finished for o in engine.step()] == [True]  # a is done: its slot is free for b
    engine.add_request("d", [1, 2], params)
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add_request("d", [1] * 60, SamplingParams(max_tokens=5))
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("c", [1, 2], params)


def test_a_stop_token_flushes_an_incomplete_character_instead_of_dropping_it() -> None:
    """Byte tokens: 'A', then 0xC3 (the first byte of 'é', held back while incomplete), then a stop token."""
    engine = LLMEngine(EngineConfig(model="random:tiny", max_model_len=64, num_kv_blocks=16))
    seq = Sequence("r", [65], SamplingParams(max_tokens=8, stop_token_ids=[300]), Priority.INTERACTIVE, 0.0)
    seq.prefix_offset = seq.read_offset = 1
    engine._seqs["r"] = seq
    outputs = [engine._append(seq, token, None, None, 0.0) for token in (0x41, 0xC3, 300)]
    assert [o.new_text for o in outputs] == ["A", "", "\ufffd"]
    assert outputs[-1].finish_reason == "stop" and seq.output_text == "A\ufffd"
