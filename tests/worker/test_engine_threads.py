"""The engine is single-threaded; the engine thread hands it requests and aborts from the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine, QueueFullError, RequestOutput
from goodput.worker_image.engine_thread import EngineRunner
from goodput.worker_image.metrics import WorkerMetrics
from goodput.worker_image.sampling import Priority, SamplingParams


def test_concurrent_adds_and_aborts_while_stepping() -> None:
    engine = LLMEngine(EngineConfig(model="random:tiny", max_model_len=64, num_kv_blocks=40, max_num_seqs=8))
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)

    async def run() -> dict[str, list[RequestOutput]]:
        runner = EngineRunner(engine, asyncio.get_running_loop(), WorkerMetrics("tiny", 64))
        runner.start()
        outputs: dict[str, list[RequestOutput]] = {}

        async def client(k: int) -> None:
            streams = []
            for i in range(10):
                rid = f"{k}-{i}"
                prompt = [1 + k, 2 + i, 3] * (1 + i)
                streams.append(runner.submit(rid, prompt, params, Priority(i % 2), time.monotonic()))
                if i == 7:
                    streams[-1].close()
                await asyncio.sleep(0.001)
            for stream in streams:
                outputs[stream.request_id] = [out async for out in stream.outputs()]

        await asyncio.gather(*(client(k) for k in range(4)))
        runner.stop()
        return outputs

    outputs = asyncio.run(run())
    assert len(outputs) == 40
    assert all(outs == [] for rid, outs in outputs.items() if rid.endswith("-7"))
    finished = {rid: outs for rid, outs in outputs.items() if not rid.endswith("-7")}
    assert all(outs[-1].finish_reason == "length" for outs in finished.values())
    assert all(sum(len(o.new_token_ids) for o in outs) == 6 for outs in finished.values())
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
    assert engine.step() == []  # the window is open: nothing runs, and the engine says until when
    assert engine.deferred_until is not None and engine.deferred_until - start >= 0.025
    time.sleep(max(0.0, engine.deferred_until - time.monotonic()))
    outs = engine.step()
    assert [o.request_id for o in outs] == ["a"] and outs[0].finished


def test_requests_the_engine_thread_is_still_adding_count_against_the_queue_bound() -> None:
    """The engine thread takes the inbox, then adds each request to the engine: a request admitted in between
    must see them, or the engine refuses it after its 200 has gone out (a stream that ends in an error)."""
    engine = LLMEngine(EngineConfig(model="random:tiny", max_model_len=64, max_num_seqs=1, max_waiting=1))
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    adding, release = threading.Event(), threading.Event()
    add = engine.add_request

    def slow_add(*args: object, **kwargs: object) -> None:
        adding.set()
        release.wait(10)
        add(*args, **kwargs)  # type: ignore[arg-type]

    engine.add_request = slow_add  # type: ignore[method-assign]

    async def run() -> None:
        runner = EngineRunner(engine, asyncio.get_running_loop(), WorkerMetrics("tiny", 64))
        runner.start()
        try:
            first = runner.submit("a", [1, 2, 3], params, Priority.INTERACTIVE, time.monotonic())
            assert await asyncio.to_thread(adding.wait, 10)  # taken from the inbox, not in the engine yet
            second = runner.submit("b", [1, 2, 3], params, Priority.INTERACTIVE, time.monotonic())  # it waits
            with pytest.raises(QueueFullError):  # one running and one waiting: the bound, counted now
                runner.submit("c", [1, 2, 3], params, Priority.INTERACTIVE, time.monotonic())
            release.set()
            for stream in (first, second):
                outputs = [out async for out in stream.outputs()]
                assert outputs[-1].finish_reason == "length"
        finally:
            release.set()
            runner.stop()

    asyncio.run(run())
