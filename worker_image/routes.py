"""The OpenAI routes: models, completions and chat. Each handler admits the request, turns its body into
engine parameters (`params.py`), submits it to the engine thread, and answers as JSON or server-sent events."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from worker_image.engine import RequestOutput
from worker_image.errors import bad_request
from worker_image.params import check_lengths, check_model, resolve_priority, sampling_params, start
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
    ModelCard,
    ModelList,
    PriorityName,
    TokenLogprob,
)
from worker_image.state import WorkerState
from worker_image.streaming import EventStreamResponse, sse, token_logprobs, until_disconnect, usage_of

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

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    state: WorkerState = request.app.state.worker
    card = ModelCard(id=state.model_name, created=state.created, max_model_len=state.config.max_model_len)
    return ModelList(data=[card])


@router.post("/v1/completions", response_model=CompletionResponse, responses={200: _SSE})
async def completions(
    request: Request,
    body: CompletionRequest,
    x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
) -> Response:
    return await _completion(request, body, x_goodput_priority)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={200: _SSE})
async def chat_completions(
    request: Request,
    body: ChatCompletionRequest,
    x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
) -> Response:
    return await _chat_completion(request, body, x_goodput_priority)


async def _completion(
    request: Request, body: CompletionRequest, header_priority: PriorityName | None
) -> Response:
    arrival: float = request.state.arrival
    state: WorkerState = request.app.state.worker
    runner = state.admit()
    check_model(state, body)
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    tokenizer = runner.engine.tokenizer
    prompt_ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    max_tokens = check_lengths(
        state, prompt_ids, 16 if body.max_tokens is None else body.max_tokens, "prompt"
    )
    params = sampling_params(body, max_tokens, body.logprobs)
    stream = start(
        runner, "cmpl", "prompt", prompt_ids, params, resolve_priority(body, header_priority), arrival
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
                    logprobs=logprobs_of(token_logprobs(runner, output), offset),
                    finish_reason=output.finish_reason if output.finished else None,
                )
                offset += len(output.new_text)
                chunk = CompletionResponse(
                    id=stream.request_id, created=created, model=model, choices=[choice]
                )
                yield sse(chunk.model_dump(mode="json", exclude={"usage"} if not include_usage else set()))
                if output.finished and include_usage:
                    final = CompletionResponse(
                        id=stream.request_id, created=created, model=model, choices=[], usage=usage_of(output)
                    )
                    yield sse(final)
            yield sse("[DONE]")

        return EventStreamResponse(events(), stream)

    async def collect() -> Response:
        text: list[str] = []
        entries: list[TokenLogprob] = []
        last = None
        async for output in stream.outputs():
            text.append(output.new_text)
            entries.extend(token_logprobs(runner, output))
            last = output
        assert last is not None
        merged = logprobs_of(entries, 0)
        choice = CompletionChoice(
            index=0, text="".join(text), logprobs=merged, finish_reason=last.finish_reason
        )
        response = CompletionResponse(
            id=stream.request_id, created=created, model=model, choices=[choice], usage=usage_of(last)
        )
        return JSONResponse(response.model_dump(mode="json"))

    return await until_disconnect(request, stream, collect())


async def _chat_completion(
    request: Request, body: ChatCompletionRequest, header_priority: PriorityName | None
) -> Response:
    arrival: float = request.state.arrival
    state: WorkerState = request.app.state.worker
    runner = state.admit()
    check_model(state, body)
    tokenizer = runner.engine.tokenizer
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    try:
        prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
    except Exception as exc:  # a template rejecting these messages (raise_exception) is the client's error
        raise bad_request(f"the chat template rejected the messages: {exc}", "messages") from None
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = check_lengths(state, prompt_ids, requested, "messages")
    wants_logprobs = body.logprobs or body.top_logprobs is not None
    params = sampling_params(body, max_tokens, (body.top_logprobs or 0) if wants_logprobs else None)
    stream = start(
        runner, "chatcmpl", "messages", prompt_ids, params, resolve_priority(body, header_priority), arrival
    )
    created, model = int(time.time()), state.model_name

    def logprobs_of(output: RequestOutput) -> ChatLogprobs | None:
        return ChatLogprobs(content=token_logprobs(runner, output)) if wants_logprobs else None

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
                    yield sse(chunk({"role": "assistant", "content": ""}, None, None))
                    first = False
                delta = {"content": output.new_text} if output.new_text else {}
                finish = output.finish_reason if output.finished else None
                yield sse(chunk(delta, logprobs_of(output), finish))
                if output.finished and include_usage:
                    final = chunk({}, None, None) | {"choices": [], "usage": usage_of(output).model_dump()}
                    yield sse(final)
            yield sse("[DONE]")

        return EventStreamResponse(events(), stream)

    async def collect() -> Response:
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        last = None
        async for output in stream.outputs():
            text.append(output.new_text)
            if wants_logprobs:
                tokens.extend(token_logprobs(runner, output))
            last = output
        assert last is not None
        choice = ChatChoice(
            index=0,
            message=AssistantMessage(content="".join(text)),
            logprobs=ChatLogprobs(content=tokens) if wants_logprobs else None,
            finish_reason=last.finish_reason,
        )
        response = ChatCompletionResponse(
            id=stream.request_id, created=created, model=model, choices=[choice], usage=usage_of(last)
        )
        return JSONResponse(response.model_dump(mode="json"))

    return await until_disconnect(request, stream, collect())
