"""POST /v1/completions: one prompt (text or token ids), n choices, as JSON or server-sent events."""

from __future__ import annotations

import itertools
import time
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import Response

from goodput.worker_image.engine import RequestOutput
from goodput.worker_image.errors import bad_request
from goodput.worker_image.params import admit, check_lengths, grammar, sampling_params, submit
from goodput.worker_image.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    PriorityName,
    TokenLogprob,
)
from goodput.worker_image.streaming import collect_choices, respond, token_logprobs, usage_of


async def completion(
    request: Request,
    body: CompletionRequest,
    x_goodput_priority: Annotated[PriorityName | None, Header()] = None,
) -> Response:
    state, runner = admit(request, body)
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    prompt_ids = runner.engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    max_tokens = check_lengths(
        state, prompt_ids, 16 if body.max_tokens is None else body.max_tokens, "prompt"
    )
    constraint = await grammar(runner, body, None)
    params = sampling_params(body, max_tokens, body.logprobs, constraint)
    request_id, streams = submit(
        request, body, x_goodput_priority, runner, "cmpl", "prompt", prompt_ids, params
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

    def chunk_choices(index: int, output: RequestOutput) -> list[dict[str, Any]]:
        choice = CompletionChoice(
            index=index,
            text=output.new_text,
            logprobs=logprobs_of(token_logprobs(runner, output), offsets[index]),
            finish_reason=output.finish_reason if output.finished else None,
        )
        offsets[index] += len(output.new_text)
        return [choice.model_dump(mode="json")]

    async def collected() -> CompletionResponse:
        done = await collect_choices(runner, streams, body.logprobs is not None)
        choices = [
            CompletionChoice(
                index=i, text=c.text, logprobs=logprobs_of(c.logprobs, 0), finish_reason=c.final.finish_reason
            )
            for i, c in enumerate(done)
        ]
        usage = usage_of([c.final for c in done])
        return CompletionResponse(id=request_id, created=created, model=model, choices=choices, usage=usage)

    offsets = [0] * body.n  # where each streamed choice's next text starts, for the logprobs' text_offset
    header = {"id": request_id, "object": "text_completion", "created": created, "model": model}
    return await respond(request, body, streams, header, chunk_choices, collected)
