"""POST /v1/chat/completions: messages through the chat template, n choices, structured outputs and tool
calls, as JSON or server-sent events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import Response

from goodput.worker_image.engine import RequestOutput
from goodput.worker_image.errors import bad_request
from goodput.worker_image.params import admit, check_lengths, grammar, sampling_params, submit
from goodput.worker_image.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    PriorityName,
    TokenLogprob,
)
from goodput.worker_image.streaming import collect_choices, respond, token_logprobs, usage_of
from goodput.worker_image.tools import tool_calls, tool_schema


async def chat_completion(
    request: Request,
    body: ChatCompletionRequest,
    x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
) -> Response:
    state, runner = admit(request, body)
    tools = tool_schema(body)
    tokenizer = runner.engine.tokenizer
    messages = [m.for_template() for m in body.messages]
    try:
        definitions = [tool.model_dump() for tool in body.tools] if body.tools else None
        prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(messages, definitions))
    except Exception as exc:  # a template rejecting these messages (raise_exception) is the client's error
        raise bad_request(f"the chat template rejected the messages: {exc}", "messages") from None
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = check_lengths(state, prompt_ids, requested, "messages")
    wants_logprobs = body.logprobs or body.top_logprobs is not None
    constraint = await grammar(runner, body, tools[0] if tools else None)
    params = sampling_params(
        body, max_tokens, (body.top_logprobs or 0) if wants_logprobs else None, constraint
    )
    request_id, streams = submit(
        request, body, x_goodput_priority, runner, "chatcmpl", "messages", prompt_ids, params
    )
    created, model = int(time.time()), state.model_name

    def logprobs_of(entries: list[TokenLogprob]) -> ChatLogprobs | None:
        return ChatLogprobs(content=entries) if wants_logprobs else None

    def answer(text: str, finish: str | None) -> tuple[AssistantMessage, str | None]:
        """The message of a finished choice: tool calls when tools are on and the output is complete."""
        if tools is None:
            return AssistantMessage(content=text), finish
        calls = tool_calls(text, tools[1]) if finish == "stop" else None
        if calls is None:
            return AssistantMessage(content=text), finish
        return AssistantMessage(content=None, tool_calls=calls), "tool_calls" if tools[1] is None else "stop"

    started = [False] * body.n
    held: list[list[str]] = [[] for _ in streams]  # tool calls are sent whole, once complete

    def choice(
        index: int, delta: dict[str, Any], logprobs: ChatLogprobs | None, finish: str | None
    ) -> dict[str, Any]:
        logprobs_json = logprobs.model_dump(mode="json") if logprobs else None
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs_json}

    def chunk_choices(index: int, output: RequestOutput) -> Iterator[dict[str, Any]]:
        """The streamed choices one output makes: the role first, then the text, or the tool calls whole."""

        if not started[index]:
            started[index] = True
            yield choice(index, {"role": "assistant", "content": ""}, None, None)
        finish = output.finish_reason if output.finished else None
        logprobs = logprobs_of(token_logprobs(runner, output))
        if tools is None:
            yield choice(index, {"content": output.new_text} if output.new_text else {}, logprobs, finish)
            return
        held[index].append(output.new_text)
        if output.finished:
            message, finish = answer("".join(held[index]), finish)
            delta = message.model_dump(mode="json", exclude={"role"}, exclude_none=True)
            for i, call in enumerate(delta.get("tool_calls", [])):
                call["index"] = i
            yield choice(index, delta, logprobs, finish)
        elif logprobs is not None:
            yield choice(index, {}, logprobs, None)

    async def collected() -> ChatCompletionResponse:
        done = await collect_choices(runner, streams, wants_logprobs)
        choices = []
        for i, c in enumerate(done):
            message, finish = answer(c.text, c.final.finish_reason)
            choices.append(
                ChatChoice(index=i, message=message, logprobs=logprobs_of(c.logprobs), finish_reason=finish)
            )
        usage = usage_of([c.final for c in done])
        return ChatCompletionResponse(
            id=request_id, created=created, model=model, choices=choices, usage=usage
        )

    header = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
    return await respond(request, body, streams, header, chunk_choices, collected)
