"""What a request body asks of the engine: its prompt's length checks, sampling parameters and priority, each
problem a 400 naming the client's parameter."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from fastapi import Request

from goodput.worker_image.engine import QueueFullError
from goodput.worker_image.engine_thread import EngineRunner, RequestStream
from goodput.worker_image.errors import bad_request, not_found, queue_full
from goodput.worker_image.grammar import ANY_JSON_OBJECT, GrammarError, json_schema_grammar
from goodput.worker_image.protocol import GenerationRequest, PriorityName
from goodput.worker_image.sampling import InvalidParameterError, Priority, SamplingParams
from goodput.worker_image.state import WorkerState

_TIER_CLASS: dict[str | None, PriorityName] = {"flex": "batch", "priority": "interactive"}


def resolve_priority(body: GenerationRequest, header: PriorityName | None) -> Priority:
    """The body's `priority`, else its `service_tier`'s class, else the header's, else interactive."""
    return Priority[(body.priority or _TIER_CLASS.get(body.service_tier) or header or "interactive").upper()]


def admit(request: Request, body: GenerationRequest) -> tuple[WorkerState, EngineRunner]:
    """The worker's state and engine thread, once this request may go ahead: not draining, loading or
    overloaded, our model, and only values the worker serves."""
    state: WorkerState = request.app.state.worker
    runner = state.admit()
    check_model(state, body.model)
    check_supported(body)
    return state, runner


def check_supported(body: GenerationRequest) -> None:
    """400 for values of declared parameters that the worker does not serve."""
    if body.best_of is not None and body.best_of != body.n:
        raise bad_request("best_of other than n is not supported", "best_of")
    if body.stream_options is not None and body.stream_options.continuous_usage_stats:
        raise bad_request("stream_options.continuous_usage_stats is not supported", "stream_options")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed with stream=true", "stream_options")


async def grammar(
    runner: EngineRunner, body: GenerationRequest, tool_schema: dict[str, Any] | None
) -> str | None:
    """The grammar the output must match: the tool call's schema, or the response format's. It compiles
    off the event loop (a large schema takes a while)."""
    fmt, param = body.response_format, "response_format"
    if tool_schema is not None:
        schema, param = tool_schema, "tool_choice"
    elif fmt is None or fmt.type == "text":
        return None
    elif fmt.type == "json_object":
        schema = ANY_JSON_OBJECT
    elif fmt.json_schema is None:
        raise bad_request("response_format of type json_schema needs json_schema", "response_format")
    else:
        schema = fmt.json_schema.schema_
    return await asyncio.to_thread(_compile, runner, schema, param)


def _compile(runner: EngineRunner, schema: dict[str, Any], param: str) -> str:
    try:
        compiled = json_schema_grammar(schema)
        runner.engine.grammars.check(compiled)
    except GrammarError as exc:
        raise bad_request(f"the JSON schema cannot be enforced: {exc}", param) from None
    return compiled


def _logit_bias(body: GenerationRequest) -> dict[int, float]:
    try:
        return {int(token): bias for token, bias in (body.logit_bias or {}).items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids (integers as strings)", "logit_bias") from None


def sampling_params(
    body: GenerationRequest, max_tokens: int, logprobs: int | None, grammar: str | None = None
) -> SamplingParams:
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
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logit_bias=_logit_bias(body),
            grammar=grammar,
        )
    except InvalidParameterError as exc:
        raise bad_request(str(exc), exc.param) from None


def check_lengths(
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


def check_model(state: WorkerState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise not_found(f"The model `{model}` does not exist.", "model")


def start(
    runner: EngineRunner,
    request_id: str,
    prompt_param: str,
    prompt_ids: list[int],
    params: SamplingParams,
    n: int,
    priority: Priority,
    arrival: float,
) -> list[RequestStream]:
    """Submit the request's n choices, each its own engine request (choice i seeded with seed + i)."""
    streams: list[RequestStream] = []
    try:
        for i in range(n):
            seed = None if params.seed is None else params.seed + i
            choice = replace(params, seed=seed)
            streams.append(
                runner.submit(
                    request_id if n == 1 else f"{request_id}-{i}", prompt_ids, choice, priority, arrival
                )
            )
    except QueueFullError as exc:
        _close(streams)
        raise queue_full(str(exc)) from None
    except InvalidParameterError as exc:
        _close(streams)
        raise bad_request(str(exc), exc.param) from None
    except ValueError as exc:  # the engine's own checks concern the prompt
        _close(streams)
        raise bad_request(str(exc), prompt_param) from None
    except BaseException:
        _close(streams)
        raise
    return streams


def submit(
    request: Request,
    body: GenerationRequest,
    header_priority: PriorityName | None,
    runner: EngineRunner,
    id_prefix: str,
    prompt_param: str,
    prompt_ids: list[int],
    params: SamplingParams,
) -> tuple[str, list[RequestStream]]:
    """A fresh request id and the started streams of the body's n choices, at the priority it asks for."""
    request_id = f"{id_prefix}-{uuid.uuid4().hex}"
    priority = resolve_priority(body, header_priority)
    arrival: float = request.state.arrival
    return request_id, start(runner, request_id, prompt_param, prompt_ids, params, body.n, priority, arrival)


def _close(streams: list[RequestStream]) -> None:
    for stream in streams:
        stream.close()
