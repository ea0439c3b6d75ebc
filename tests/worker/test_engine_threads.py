"""The engine is driven from one thread while others add and abort requests."""

from __future__ import annotations

import threading
import time

from worker_image.config import EngineConfig
from worker_image.engine import LLMEngine, RequestOutput
from worker_image.sampling import Priority, SamplingParams


def test_concurrent_adds_and_aborts_while_stepping() -> None:
    engine = LLMEngine(EngineConfig(model="random:tiny", max_model_len=64, num_kv_blocks=40, max_num_seqs=8))
    outputs: dict[str, list[RequestOutput]] = {}
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)

    def client(k: int) -> None:
        for i in range(10):
            rid = f"{k}-{i}"
            engine.add_request(rid, [1 + k, 2 + i, 3] * (1 + i), params, Priority(i % 2))
            if i == 7:
                engine.abort_request(rid)
            time.sleep(0.001)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or engine.has_unfinished_requests():
        if not engine.wait_for_work(0.01):
            continue
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    assert len(outputs) == 40
    reasons = {rid: outs[-1].finish_reason for rid, outs in outputs.items()}
    assert all(r == "length" for rid, r in reasons.items() if not rid.endswith("-7"))
    assert all(
        sum(len(o.new_token_ids) for o in outs) == 6
        for rid, outs in outputs.items()
        if reasons[rid] == "length"
    )
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.num_free_blocks) == (0, 0, 40)


def test_batch_window_defers_then_admits() -> None:
    engine = LLMEngine(
        EngineConfig(
            model="random:tiny", max_model_len=64, num_kv_blocks=16, batch_window_ms=30.0, max_num_seqs=4
        )
    )
    engine.add_request("a", [1, 2, 3], SamplingParams(max_tokens=1))
    start = time.monotonic()
    assert engine.step() == []  # waited inside step for the window instead of spinning
    assert time.monotonic() - start >= 0.025
    outs = engine.step()
    assert [o.request_id for o in outs] == ["a"] and outs[0].finished
