"""The one thread that drives the engine, and the per-request streams the asyncio handlers read.

`LLMEngine` is single-threaded. Handlers on the event loop hand requests and aborts to this thread through an
inbox under one condition variable; the thread adds them, steps the engine, and feeds each request's asyncio
queue through `loop.call_soon_threadsafe`. A request whose client goes away is aborted, so its KV blocks come
back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from goodput.worker_image.engine import EngineStats, LLMEngine, QueueFullError, RequestOutput
from goodput.worker_image.errors import APIError, bad_request, queue_full, unavailable
from goodput.worker_image.metrics import FinishedRequest, WorkerMetrics
from goodput.worker_image.sampling import InvalidParameterError, Priority, SamplingParams

logger = logging.getLogger("goodput.worker")


@dataclass
class RequestStream:
    """One request's outputs as the engine thread delivers them, with the timings its metrics need."""

    runner: EngineRunner
    request_id: str
    arrival: float
    queue: asyncio.Queue[tuple[RequestOutput, float] | BaseException] = field(default_factory=asyncio.Queue)
    finished: bool = False
    last_token_at: float | None = None

    async def outputs(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self.finished:
                item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                output, stamp = item
                self._observe(output, stamp)
                yield output
        finally:
            self.close()

    def close(self) -> None:
        """Abort in the engine unless finished; safe to call more than once."""
        if not self.finished:
            self.finished = True
            self.runner.abort(self.request_id)

    def _observe(self, output: RequestOutput, stamp: float) -> None:
        """TTFT and e2e latency end when the handler gets the output (what clients see, event-loop lag
        included); inter-token gaps use the engine thread's stamps, which loop lag would bunch up."""
        metrics = self.runner.metrics
        delivered = time.monotonic()
        if output.new_token_ids:
            if self.last_token_at is None:
                metrics.observe_first_token(delivered - self.arrival, output.num_prompt_tokens)
                metrics.observe_tokens(len(output.new_token_ids), None)
            else:
                metrics.observe_tokens(len(output.new_token_ids), stamp - self.last_token_at)
            self.last_token_at = stamp
        if output.finished:
            self.finished = True
            scheduled = output.first_scheduled_time
            metrics.observe_finished(
                FinishedRequest(
                    finish_reason=output.finish_reason or "stop",
                    e2e_latency_s=delivered - self.arrival,
                    queue_time_s=(scheduled - output.arrival_time) if scheduled is not None else 0.0,
                    num_prompt_tokens=output.num_prompt_tokens,
                    num_generation_tokens=output.num_output_tokens,
                )
            )


@dataclass(frozen=True)
class _Submission:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: Priority


class EngineRunner:
    """Owns the engine thread: the inbox of new requests and aborts, the step loop, and output routing.
    Public methods other than `start`/`stop` are called on the event loop."""

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop, metrics: WorkerMetrics) -> None:
        self.engine = engine
        self.loop = loop
        self.metrics = metrics
        self.error: BaseException | None = None
        self._streams: dict[str, RequestStream] = {}
        self._cond = threading.Condition()
        self._inbox: list[_Submission] = []
        # taken from the inbox by the engine thread and not yet added to the engine: still arriving, for the
        # admission check (else a request admitted meanwhile is refused after its 200 has gone out)
        self._in_transit = 0
        self._aborts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="goodput-engine", daemon=True)

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def queue_full(self) -> bool:
        with self._cond:
            return self.engine.queue_full(self._arriving())

    def _arriving(self) -> int:
        """Requests handed over and not yet in the engine's queue; the caller holds the lock."""
        return len(self._inbox) + self._in_transit

    def stats(self) -> EngineStats:
        """The engine's statistics, requests handed over but not yet added counted as waiting."""
        stats = self.engine.stats()
        with self._cond:
            return replace(stats, num_waiting=stats.num_waiting + self._arriving())

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        priority: Priority,
        arrival: float,
    ) -> RequestStream:
        """Hand a request to the engine thread. Raises QueueFullError, or ValueError from the engine's checks."""
        if self.error is not None:
            raise unavailable(f"the engine failed: {self.error}", "engine_failed")
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.engine.check_request(prompt_ids, params)
        with self._cond:
            if self.engine.queue_full(self._arriving()):
                raise QueueFullError(f"waiting queue is full ({self.engine.config.max_waiting} requests)")
            self._inbox.append(_Submission(request_id, prompt_ids, params, priority))
            self._cond.notify_all()
        stream = RequestStream(self, request_id, arrival)
        self._streams[request_id] = stream
        return stream

    def abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None:
            with self._cond:
                self._aborts.append(request_id)
                self._cond.notify_all()
            self.metrics.observe_finished(FinishedRequest("abort", 0.0, 0.0, 0, 0))

    def abort_all(self) -> None:
        """Abort every request in the engine; each stream still reads the error that says why."""
        for stream in list(self._streams.values()):
            stream.queue.put_nowait(
                unavailable("the server shut down before the request finished", "shutdown")
            )
            self.abort(stream.request_id)

    def _take_work(self) -> tuple[list[_Submission], list[str]] | None:
        """Wait for new requests, aborts, or a step to run (none while the batch window is open); None
        when there is nothing to do yet."""
        with self._cond:
            if not self._inbox and not self._aborts:
                if not self.engine.has_unfinished_requests():
                    self._cond.wait(0.1)
                    return None
                deferred = self.engine.deferred_until
                if deferred is not None and deferred > time.monotonic():
                    self._cond.wait(deferred - time.monotonic())
                    return None
            inbox, self._inbox = self._inbox, []
            self._in_transit = len(inbox)
            aborts, self._aborts = self._aborts, []
        return inbox, aborts

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                work = self._take_work()
                if work is None:
                    continue
                inbox, aborts = work
                for sub in inbox:
                    try:
                        self.engine.add_request(sub.request_id, sub.prompt_ids, sub.params, sub.priority)
                    except QueueFullError as exc:
                        self.loop.call_soon_threadsafe(self._refuse, sub.request_id, queue_full(str(exc)))
                    except ValueError as exc:  # checked on submit already; one request's fault all the same
                        param = exc.param if isinstance(exc, InvalidParameterError) else None
                        error = bad_request(str(exc), param)
                        self.loop.call_soon_threadsafe(self._refuse, sub.request_id, error)
                    finally:
                        with self._cond:
                            self._in_transit -= 1
                for request_id in aborts:
                    self.engine.abort_request(request_id)
                outputs = self.engine.step()
                if outputs:
                    self.loop.call_soon_threadsafe(self._deliver, outputs, time.monotonic())
        except Exception as exc:
            logger.exception("engine step failed; failing all in-flight requests")
            self.loop.call_soon_threadsafe(self._fail, exc)

    def _deliver(self, outputs: list[RequestOutput], stamp: float) -> None:
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is None:
                continue  # aborted while the step ran
            stream.queue.put_nowait((output, stamp))
            if output.finished:
                del self._streams[output.request_id]

    def _refuse(self, request_id: str, error: APIError) -> None:
        stream = self._streams.pop(request_id, None)
        if stream is not None:
            stream.queue.put_nowait(error)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        for stream in self._streams.values():
            stream.queue.put_nowait(APIError(500, f"the engine failed: {exc}", "internal_error"))
        self._streams.clear()
