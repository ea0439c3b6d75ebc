"""The worker's OpenAI-compatible HTTP server: one engine thread, asyncio handlers, graceful drain.

The engine is driven by a single thread that loops `step()`; each request owns an asyncio queue that the
thread feeds through `loop.call_soon_threadsafe`. A request whose client goes away is aborted in the engine,
so its KV blocks come back. Client errors are 4xx with OpenAI's error body, never 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from worker_image.config import EngineConfig
from worker_image.engine import LLMEngine, QueueFullError, RequestOutput
from worker_image.metrics import FinishedRequest, WorkerMetrics
from worker_image.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    GenerationRequest,
    ModelCard,
    ModelList,
    PriorityName,
    PromptTokensDetails,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from worker_image.sampling import Priority, SamplingParams

logger = logging.getLogger("goodput.worker")

RETRY_AFTER_S = 1
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def max_body_bytes(max_model_len: int) -> int:
    """Room for a full context even as escaped JSON (up to ~32 bytes a token), plus the other fields."""
    return 32 * max_model_len + 65536


@dataclass(frozen=True)
class ServeOptions:
    """Server settings that are not engine arguments."""

    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    drain_timeout_s: float = 30.0
    served_model_name: str | None = None


# --- errors ------------------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def unavailable(message: str, code: str) -> APIError:
    return APIError(
        503, message, "service_unavailable", code=code, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def queue_full(detail: str) -> APIError:
    return APIError(
        429,
        f"the server's request queue is full ({detail}); retry later",
        "rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


_PARAM_IN_MESSAGE = re.compile(r"invalid [\w ]+?: (\w+)=")


def _param_from_error(error: ValueError) -> str | None:
    """The engine's ValueErrors name the field as 'invalid ...: field=value: why'."""
    match = _PARAM_IN_MESSAGE.search(str(error))
    return match.group(1) if match else None


# --- the engine thread and per-request streams ---------------------------------------------------------------


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


class EngineRunner:
    """Runs `engine.step()` on one dedicated thread and routes outputs to their requests' queues."""

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop, metrics: WorkerMetrics) -> None:
        self.engine = engine
        self.loop = loop
        self.metrics = metrics
        self.error: BaseException | None = None
        self._streams: dict[str, RequestStream] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="goodput-engine", daemon=True)

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        priority: Priority,
        arrival: float,
    ) -> RequestStream:
        """Call on the event loop. Raises QueueFullError or ValueError from the engine."""
        if self.error is not None:
            raise unavailable(f"the engine failed: {self.error}", "engine_failed")
        self.engine.add_request(request_id, prompt_ids, params, priority)
        stream = RequestStream(self, request_id, arrival)
        self._streams[request_id] = stream
        return stream

    def abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None:
            self.engine.abort_request(request_id)
            self.metrics.observe_finished(FinishedRequest("abort", 0.0, 0.0, 0, 0))

    def abort_all(self) -> None:
        for stream in list(self._streams.values()):
            stream.queue.put_nowait(
                unavailable("the server shut down before the request finished", "shutdown")
            )
            stream.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.engine.has_unfinished_requests():
                    self.engine.wait_for_work(0.1)
                    continue
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

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        for stream in self._streams.values():
            stream.queue.put_nowait(APIError(500, f"the engine failed: {exc}", "internal_error"))
        self._streams.clear()


def warm_up(engine: LLMEngine) -> None:
    """One short generation before the worker reports ready, so the first user request does not pay for
    torch's first-call costs (and stall the event loop behind them)."""
    prompt = engine.tokenizer.encode("warm up") or [0]
    engine.generate([prompt], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))


class WorkerState:
    """What the handlers share: the engine once loaded, the metrics, and whether the worker is draining."""

    def __init__(self, config: EngineConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self.created = int(time.time())
        self.metrics = WorkerMetrics(model_name, config.max_model_len)
        self.runner: EngineRunner | None = None
        self.load_error: BaseException | None = None
        self.draining = False

    @property
    def healthy(self) -> bool:
        return self.load_error is None and (self.runner is None or self.runner.error is None)

    @property
    def ready(self) -> bool:
        return self.runner is not None and self.healthy and not self.draining

    def admit(self) -> EngineRunner:
        """The runner, if this worker takes new requests now (the engine re-checks its queue on add)."""
        if self.draining:
            raise unavailable("the server is draining; retry on another replica", "draining")
        if self.runner is None:
            raise unavailable("the model is still loading", "loading")
        if self.runner.engine.queue_full():
            raise queue_full(f"{self.config.max_waiting} requests waiting")
        return self.runner

    async def drain(self, timeout_s: float) -> None:
        """Stop admitting and wait for in-flight requests, at most `timeout_s`; abort what is left."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.runner is not None and self.runner.num_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.runner is not None and self.runner.num_in_flight:
            logger.warning("drain timeout: aborting %d in-flight requests", self.runner.num_in_flight)
            self.runner.abort_all()


# --- request handling ----------------------------------------------------------------------------------------


def _resolve_priority(body: GenerationRequest, header: PriorityName | None) -> Priority:
    return Priority[(body.priority or header or "interactive").upper()]


def _sampling_params(body: GenerationRequest, max_tokens: int, logprobs: int | None) -> SamplingParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
            stop_token_ids=list(body.stop_token_ids or []),
            ignore_eos=body.ignore_eos,
            logprobs=logprobs,
        )
    except ValueError as exc:
        raise bad_request(str(exc), _param_from_error(exc)) from None


def _check_lengths(
    state: WorkerState, prompt_ids: list[int], max_tokens: int | None, prompt_param: str
) -> int:
    """The max_tokens to use; 400 when the prompt plus the requested output exceed the context."""
    limit = state.config.max_model_len
    if not prompt_ids:
        raise bad_request("the prompt is empty", prompt_param)
    if len(prompt_ids) >= limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, your prompt has "
            f"{len(prompt_ids)} tokens, which leaves no room for output.",
            prompt_param,
        )
    if max_tokens is None:
        return limit - len(prompt_ids)
    if len(prompt_ids) + max_tokens > limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the prompt, {max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.",
            "max_tokens",
        )
    return max_tokens


def _check_model(state: WorkerState, body: GenerationRequest) -> None:
    if body.model is not None and body.model != state.model_name:
        raise APIError(
            404, f"The model `{body.model}` does not exist.", param="model", code="model_not_found"
        )


def _start(
    runner: EngineRunner,
    prefix: str,
    prompt_param: str,
    prompt_ids: list[int],
    params: SamplingParams,
    priority: Priority,
    arrival: float,
) -> RequestStream:
    request_id = f"{prefix}-{uuid.uuid4().hex}"
    try:
        return runner.submit(request_id, prompt_ids, params, priority, arrival)
    except QueueFullError as exc:
        raise queue_full(str(exc)) from None
    except ValueError as exc:  # the engine's own checks concern the prompt
        raise bad_request(str(exc), _param_from_error(exc) or prompt_param) from None


def _usage(output: RequestOutput) -> Usage:
    return Usage(
        prompt_tokens=output.num_prompt_tokens,
        completion_tokens=output.num_output_tokens,
        total_tokens=output.num_prompt_tokens + output.num_output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=output.num_cached_tokens),
    )


def _token_logprobs(runner: EngineRunner, output: RequestOutput) -> list[TokenLogprob]:
    """The engine's logprobs of the new tokens, each with its top alternatives, as decoded strings."""
    decode = runner.engine.tokenizer.decode
    tops = output.new_top_logprobs or [[] for _ in output.new_token_ids]
    return [
        TokenLogprob(
            token=decode([token_id]),
            logprob=logprob,
            top_logprobs=[TopLogprob(token=decode([tid]), logprob=lp) for tid, lp in top],
        )
        for token_id, logprob, top in zip(output.new_token_ids, output.new_logprobs or [], tops, strict=False)
    ]


def _sse(payload: BaseModel | dict[str, Any] | str) -> str:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_none=False)
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n"


class EventStreamResponse(StreamingResponse):
    """Server-sent events whose request is aborted in the engine however the response ends."""

    def __init__(self, content: AsyncIterator[str], stream: RequestStream) -> None:
        super().__init__(
            self._errors_as_events(content),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
        self._stream = stream

    @staticmethod
    async def _errors_as_events(content: AsyncIterator[str]) -> AsyncIterator[str]:
        """Once the 200 is sent, a failure (engine error, drain timeout) can only be told in the stream."""
        try:
            async for event in content:
                yield event
        except APIError as exc:
            yield _sse(exc.body())
            yield _sse("[DONE]")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()


class RequestGate:
    """Outermost ASGI layer. Stamps each request's arrival before its body is read (so TTFT covers parsing,
    as clients see it); turns generation requests away (503 draining/loading, 429 queue full) before any
    parsing, so overload costs the engine thread as little CPU as possible; bounds the body, so one huge
    upload cannot exhaust the worker's memory."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: WorkerState, max_body_bytes: int
    ) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrival"] = time.monotonic()
        if scope["method"] == "POST" and scope["path"] in GENERATION_PATHS:
            try:
                self.state.admit()
            except APIError as refusal:
                await refusal.response()(scope, receive, send)
                return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            error = APIError(
                413, f"the request body exceeds {self.max_body_bytes} bytes", code="body_too_large"
            )
            await error.response()(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # a chunked upload: FastAPI turns this into a 400
                raise ValueError(f"the request body exceeds {self.max_body_bytes} bytes")
            return message

        await self.app(scope, bounded_receive, send)


async def _until_disconnect(request: Request, stream: RequestStream, work: Awaitable[Response]) -> Response:
    """Run a non-streaming request, aborting it in the engine when the client goes away first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        return Response(status_code=499)
    finally:
        watcher.cancel()
        stream.close()


async def _completion(
    request: Request, body: CompletionRequest, header_priority: PriorityName | None
) -> Response:
    arrival: float = request.state.arrival
    state: WorkerState = request.app.state.worker
    runner = state.admit()
    _check_model(state, body)
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    tokenizer = runner.engine.tokenizer
    prompt_ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    max_tokens = _check_lengths(
        state, prompt_ids, 16 if body.max_tokens is None else body.max_tokens, "prompt"
    )
    params = _sampling_params(body, max_tokens, body.logprobs)
    stream = _start(
        runner, "cmpl", "prompt", prompt_ids, params, _resolve_priority(body, header_priority), arrival
    )
    created, model = int(time.time()), state.model_name

    def logprobs_of(entries: list[TokenLogprob], offset: int) -> CompletionLogprobs | None:
        """The legacy completions layout; offsets count characters of the decoded tokens."""
        if body.logprobs is None:
            return None
        offsets = list(itertools.accumulate((len(e.token) for e in entries), initial=offset))[: len(entries)]
        return CompletionLogprobs(
            tokens=[e.token for e in entries],
            token_logprobs=[e.logprob for e in entries],
            top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries],
            text_offset=offsets,
        )

    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage

        async def events() -> AsyncIterator[str]:
            offset = 0
            async for output in stream.outputs():
                choice = CompletionChoice(
                    index=0,
                    text=output.new_text,
                    logprobs=logprobs_of(_token_logprobs(runner, output), offset),
                    finish_reason=output.finish_reason if output.finished else None,
                )
                offset += len(output.new_text)
                chunk = CompletionResponse(
                    id=stream.request_id, created=created, model=model, choices=[choice]
                )
                yield _sse(chunk.model_dump(mode="json", exclude={"usage"} if not include_usage else set()))
                if output.finished and include_usage:
                    final = CompletionResponse(
                        id=stream.request_id, created=created, model=model, choices=[], usage=_usage(output)
                    )
                    yield _sse(final)
            yield _sse("[DONE]")

        return EventStreamResponse(events(), stream)

    async def collect() -> Response:
        text: list[str] = []
        entries: list[TokenLogprob] = []
        last = None
        async for output in stream.outputs():
            text.append(output.new_text)
            entries.extend(_token_logprobs(runner, output))
            last = output
        assert last is not None
        merged = logprobs_of(entries, 0)
        choice = CompletionChoice(
            index=0, text="".join(text), logprobs=merged, finish_reason=last.finish_reason
        )
        response = CompletionResponse(
            id=stream.request_id, created=created, model=model, choices=[choice], usage=_usage(last)
        )
        return JSONResponse(response.model_dump(mode="json"))

    return await _until_disconnect(request, stream, collect())


async def _chat_completion(
    request: Request, body: ChatCompletionRequest, header_priority: PriorityName | None
) -> Response:
    arrival: float = request.state.arrival
    state: WorkerState = request.app.state.worker
    runner = state.admit()
    _check_model(state, body)
    tokenizer = runner.engine.tokenizer
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    try:
        prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
    except Exception as exc:  # a template rejecting these messages (raise_exception) is the client's error
        raise bad_request(f"the chat template rejected the messages: {exc}", "messages") from None
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = _check_lengths(state, prompt_ids, requested, "messages")
    wants_logprobs = body.logprobs or body.top_logprobs is not None
    params = _sampling_params(body, max_tokens, (body.top_logprobs or 0) if wants_logprobs else None)
    stream = _start(
        runner, "chatcmpl", "messages", prompt_ids, params, _resolve_priority(body, header_priority), arrival
    )
    created, model = int(time.time()), state.model_name

    def logprobs_of(output: RequestOutput) -> ChatLogprobs | None:
        return ChatLogprobs(content=_token_logprobs(runner, output)) if wants_logprobs else None

    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage

        def chunk(delta: dict[str, str], logprobs: ChatLogprobs | None, finish: str | None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": stream.request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{
                    "index": 0, "delta": delta, "finish_reason": finish,
                    "logprobs": logprobs.model_dump(mode="json") if logprobs else None,
                }],
            }  # fmt: skip
            if include_usage:
                payload["usage"] = None
            return payload

        async def events() -> AsyncIterator[str]:
            first = True
            async for output in stream.outputs():
                if first:
                    yield _sse(chunk({"role": "assistant", "content": ""}, None, None))
                    first = False
                delta = {"content": output.new_text} if output.new_text else {}
                finish = output.finish_reason if output.finished else None
                yield _sse(chunk(delta, logprobs_of(output), finish))
                if output.finished and include_usage:
                    final = chunk({}, None, None) | {"choices": [], "usage": _usage(output).model_dump()}
                    yield _sse(final)
            yield _sse("[DONE]")

        return EventStreamResponse(events(), stream)

    async def collect() -> Response:
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        last = None
        async for output in stream.outputs():
            text.append(output.new_text)
            if wants_logprobs:
                tokens.extend(_token_logprobs(runner, output))
            last = output
        assert last is not None
        choice = ChatChoice(
            index=0,
            message=AssistantMessage(content="".join(text)),
            logprobs=ChatLogprobs(content=tokens) if wants_logprobs else None,
            finish_reason=last.finish_reason,
        )
        response = ChatCompletionResponse(
            id=stream.request_id, created=created, model=model, choices=[choice], usage=_usage(last)
        )
        return JSONResponse(response.model_dump(mode="json"))

    return await _until_disconnect(request, stream, collect())


# --- the application -----------------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        400: "Invalid request: malformed JSON, wrong types, invalid parameters or an over-long prompt",
        404: "Unknown model",
        413: "The request body is too large for this model's context",
        429: "The request queue is full; see Retry-After",
        503: "Draining or still loading; see Retry-After",
    }.items()
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"}
}
_BEARER = HTTPBearer(auto_error=False, description="The API key, when the worker is started with one")
_SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event; `data` is a JSON chunk, or [DONE] last",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}
_SSE = {
    "content": {"text/event-stream": {"schema": _SSE_EVENT}},
    "description": "JSON, or SSE when stream",
}


def create_app(
    config: EngineConfig,
    options: ServeOptions,
    engine: LLMEngine | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The ASGI app. Without `engine`, the model loads on a background thread while /health already answers."""
    model_name = options.served_model_name or config.model
    state = WorkerState(config, model_name)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def attach(loaded: LLMEngine) -> None:
            state.runner = EngineRunner(loaded, loop, state.metrics)
            state.runner.start()
            logger.info("model %s loaded; ready", model_name)

        def load() -> None:
            try:
                loaded = LLMEngine(config)
                warm_up(loaded)
            except Exception as exc:
                logger.exception("loading the model failed")
                with contextlib.suppress(RuntimeError):  # the server already stopped
                    loop.call_soon_threadsafe(_load_failed, exc)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(attach, loaded)

        def _load_failed(exc: BaseException) -> None:
            state.load_error = exc
            if on_fatal is not None:
                on_fatal(exc)

        if engine is not None:
            attach(engine)
        else:
            threading.Thread(target=load, name="goodput-load", daemon=True).start()
        yield
        if state.runner is not None:
            state.runner.abort_all()
            state.runner.stop()

    app = FastAPI(
        title="goodput worker",
        version="0.1.0",
        description="OpenAI-compatible completions and chat served by the goodput engine.",
        lifespan=lifespan,
    )
    app.state.worker = state
    app.add_middleware(RequestGate, state=state, max_body_bytes=max_body_bytes(config.max_model_len))

    @app.exception_handler(APIError)
    async def on_api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        """400, not FastAPI's 422; `param` is the top-level field, the message has the full location."""
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return bad_request(
                f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}"
            ).response()
        loc = [str(part) for part in first.get("loc", ())[1:]]  # after "body", "header" or "query"
        param = loc[0] if loc else None
        message = f"{'.'.join(loc)}: {first['msg']}" if loc else str(first["msg"])
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = APIError(
            exc.status_code, str(exc.detail), "invalid_request_error", headers=dict(exc.headers or {})
        )
        return error.response()

    api_key = (options.api_key or "").encode()

    async def require_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, api_key):
            raise APIError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(require_api_key)] if options.api_key else []
    errors = _ERRORS | (_AUTH_ERRORS if options.api_key else {})

    @app.get(
        "/health",
        summary="Liveness: 200 unless the engine failed (also while the model loads)",
        responses={503: {"description": "the engine failed; restart the worker"}},
    )
    async def health() -> JSONResponse:
        if state.healthy:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "engine failed"}, status_code=503)

    @app.get(
        "/ready",
        summary="Readiness: 200 once the model is loaded, 503 while loading or draining",
        responses={503: {"description": "loading or draining"}},
    )
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready"})
        status = "draining" if state.draining else "loading" if state.healthy else "failed"
        return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get(
        "/metrics",
        summary="Prometheus metrics with vLLM's names",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        if state.runner is not None:
            state.metrics.refresh(state.runner.engine.stats())
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, responses=errors)
    async def models() -> ModelList:
        card = ModelCard(id=model_name, created=state.created, max_model_len=config.max_model_len)
        return ModelList(data=[card])

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        dependencies=guarded,
        responses={200: _SSE, **errors},
    )
    async def completions(
        request: Request,
        body: CompletionRequest,
        x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
    ) -> Response:
        return await _completion(request, body, x_goodput_priority)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        dependencies=guarded,
        responses={200: _SSE, **errors},
    )
    async def chat_completions(
        request: Request,
        body: ChatCompletionRequest,
        x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
    ) -> Response:
        return await _chat_completion(request, body, x_goodput_priority)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, corrected: validation errors are 400 (not 422) and `model` names ours."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    for parameter in operation.get("parameters", []):  # a header is absent, never null
                        options = parameter["schema"].pop("anyOf", None)
                        if options:
                            parameter["schema"] |= next(o for o in options if o.get("type") != "null")
            for name in ("CompletionRequest", "ChatCompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"] = {
                    "anyOf": [{"type": "string", "enum": [model_name]}, {"type": "null"}],
                    "title": "Model",
                }
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# --- running it ----------------------------------------------------------------------------------------------


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains (not ready, 503 to new requests, finish in-flight)
    before exiting 0; a second signal exits at once."""

    def __init__(self, config: uvicorn.Config, state: WorkerState, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._drain_started = True
        logger.info("received %s: draining for up to %.0f s", signal.Signals(sig).name, self.drain_timeout_s)
        self.state.draining = True
        self._loop.call_soon_threadsafe(self._begin_drain)

    def fail(self, exc: BaseException) -> None:
        """The model could not load: exit non-zero."""
        self.exit_code = 1
        self.should_exit = True

    def _begin_drain(self) -> None:
        async def drain_then_exit() -> None:
            await self.state.drain(self.drain_timeout_s)
            self.should_exit = True

        self._drain_task = asyncio.ensure_future(drain_then_exit())


def serve(config: EngineConfig, options: ServeOptions) -> int:
    """Serve until drained after SIGTERM; the process exit code."""
    server: DrainingServer | None = None

    def on_fatal(exc: BaseException) -> None:
        if server is not None:
            server.fail(exc)

    app = create_app(config, options, on_fatal=on_fatal)
    uv_config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(uv_config, app.state.worker, options.drain_timeout_s)
    server.run()
    return server.exit_code


@contextlib.contextmanager
def serve_in_thread(
    config: EngineConfig, options: ServeOptions, ready_timeout_s: float = 120.0
) -> Iterator[tuple[str, WorkerState]]:
    """Run the server on a background thread (tests, benchmarks); yields its base URL once ready.
    Port 0 picks a free port. Signals stay with the caller: no drain on SIGTERM here."""
    app = create_app(config, options)
    state: WorkerState = app.state.worker
    server = uvicorn.Server(
        uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="goodput-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not (server.started and state.ready):
            if state.load_error is not None:
                raise RuntimeError(f"the model failed to load: {state.load_error}") from state.load_error
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}", state
    finally:
        server.should_exit = True
        thread.join(timeout=30)
