"""Response plumbing shared by the generation routes: the answer streamed or collected, server-sent events,
the usage block, logprobs as text, and aborting a request in the engine however its response ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from goodput.worker_image.engine import RequestOutput
from goodput.worker_image.engine_thread import EngineRunner, RequestStream
from goodput.worker_image.errors import APIError
from goodput.worker_image.protocol import (
    GenerationRequest,
    PromptTokensDetails,
    TokenLogprob,
    TopLogprob,
    Usage,
)


async def respond(
    request: Request,
    body: GenerationRequest,
    streams: list[RequestStream],
    header: dict[str, Any],
    chunk_choices: Callable[[int, RequestOutput], Iterable[dict[str, Any]]],
    collected: Callable[[], Awaitable[BaseModel]],
) -> Response:
    """A generation route's answer. Streamed: a chunk of `header` and one choice for each choice an output
    makes, then the usage when asked. Otherwise the collected response, aborted if the client leaves first."""
    if not body.stream:

        async def collect() -> Response:
            return JSONResponse((await collected()).model_dump(mode="json"))

        return await until_disconnect(request, streams, collect())
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    usage_field = {"usage": None} if include_usage else {}

    async def events() -> AsyncIterator[str]:
        finals: list[RequestOutput] = []
        async for index, output in merged(streams):
            for choice in chunk_choices(index, output):
                yield sse(header | {"choices": [choice]} | usage_field)
            if output.finished:
                finals.append(output)
        if include_usage:
            yield sse(header | {"choices": [], "usage": usage_of(finals).model_dump()})
        yield sse("[DONE]")

    return EventStreamResponse(events(), streams)


def usage_of(finals: list[RequestOutput]) -> Usage:
    """The usage of one request's choices (their last outputs): the prompt counts once, as OpenAI's does."""
    prompt = finals[0].num_prompt_tokens
    completion = sum(output.num_output_tokens for output in finals)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=finals[0].num_cached_tokens),
    )


@dataclass
class Choice:
    """One choice of a finished non-streaming request."""

    text: str
    logprobs: list[TokenLogprob]
    final: RequestOutput


async def collect_choices(runner: EngineRunner, streams: list[RequestStream], logprobs: bool) -> list[Choice]:
    """Run a request's choices to the end: each one's text, logprobs (when asked) and last output."""
    texts: list[list[str]] = [[] for _ in streams]
    entries: list[list[TokenLogprob]] = [[] for _ in streams]
    finals: dict[int, RequestOutput] = {}
    async for index, output in merged(streams):
        texts[index].append(output.new_text)
        if logprobs:
            entries[index].extend(token_logprobs(runner, output))
        if output.finished:
            finals[index] = output
    return [Choice("".join(texts[i]), entries[i], finals[i]) for i in range(len(streams))]


async def merged(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The outputs of a request's choices as they come, each with its choice index."""
    if len(streams) == 1:
        async for output in streams[0].outputs():
            yield 0, output
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for output in stream.outputs():
                queue.put_nowait((index, output))
        except Exception as exc:
            queue.put_nowait((index, exc))
        queue.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.close()


def token_logprobs(runner: EngineRunner, output: RequestOutput) -> list[TokenLogprob]:
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


def sse(payload: BaseModel | dict[str, Any] | str) -> str:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_none=False)
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n"


class EventStreamResponse(StreamingResponse):
    """Server-sent events whose request is aborted in the engine however the response ends."""

    def __init__(self, content: AsyncIterator[str], streams: list[RequestStream]) -> None:
        super().__init__(
            self._errors_as_events(content),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
        self._streams = streams

    @staticmethod
    async def _errors_as_events(content: AsyncIterator[str]) -> AsyncIterator[str]:
        """Once the 200 is sent, a failure (engine error, drain timeout) can only be told in the stream."""
        try:
            async for event in content:
                yield event
        except APIError as exc:
            yield sse(exc.body())
            yield sse("[DONE]")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for stream in self._streams:
                stream.close()


async def until_disconnect(
    request: Request, streams: list[RequestStream], work: Awaitable[Response]
) -> Response:
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
        for stream in streams:
            stream.close()
