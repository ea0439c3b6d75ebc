"""What a request body asks of the engine: its prompt's length checks, sampling parameters and priority, each
problem a 400 naming the client's parameter."""

from __future__ import annotations

import uuid

from worker_image.engine import QueueFullError
from worker_image.engine_thread import EngineRunner, RequestStream
from worker_image.errors import bad_request, not_found, queue_full
from worker_image.protocol import GenerationRequest, PriorityName
from worker_image.sampling import InvalidParameterError, Priority, SamplingParams
from worker_image.state import WorkerState


def resolve_priority(body: GenerationRequest, header: PriorityName | None) -> Priority:
    return Priority[(body.priority or header or "interactive").upper()]


def sampling_params(body: GenerationRequest, max_tokens: int, logprobs: int | None) -> SamplingParams:
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


def check_model(state: WorkerState, body: GenerationRequest) -> None:
    if body.model is not None and body.model != state.model_name:
        raise not_found(f"The model `{body.model}` does not exist.", "model")


def start(
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
    except InvalidParameterError as exc:
        raise bad_request(str(exc), exc.param) from None
    except ValueError as exc:  # the engine's own checks concern the prompt
        raise bad_request(str(exc), prompt_param) from None
