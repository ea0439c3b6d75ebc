"""The OpenAI routes (models, completions, chat) and vLLM's /tokenize and /detokenize. The generation
handlers live in `completions.py` and `chat.py`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from goodput.worker_image.chat import chat_completion
from goodput.worker_image.completions import completion
from goodput.worker_image.errors import bad_request, not_found
from goodput.worker_image.params import check_model
from goodput.worker_image.protocol import (
    ChatCompletionResponse,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from goodput.worker_image.state import WorkerState

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


def _card(state: WorkerState) -> ModelCard:
    return ModelCard(id=state.model_name, created=state.created, max_model_len=state.config.max_model_len)


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    return ModelList(data=[_card(request.app.state.worker)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def model(request: Request, model_id: str) -> ModelCard:
    state: WorkerState = request.app.state.worker
    if model_id != state.model_name:
        raise not_found(f"The model `{model_id}` does not exist.", "model")
    return _card(state)


# The generation routes: each handler takes the request, its body and the X-Goodput-Priority header itself,
# and answers JSON, or server-sent events when the body streams.
for path, name, handler, answer in (
    ("/v1/completions", "completions", completion, CompletionResponse),
    ("/v1/chat/completions", "chat_completions", chat_completion, ChatCompletionResponse),
):
    router.add_api_route(
        path, handler, methods=["POST"], name=name, response_model=answer, responses={200: _SSE}
    )


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(request: Request, body: TokenizeRequest) -> TokenizeResponse:
    """vLLM's /tokenize: a prompt's token ids, or chat messages' through the chat template."""
    state: WorkerState = request.app.state.worker
    runner = state.loaded()
    check_model(state, body.model)
    tokenizer = runner.engine.tokenizer
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("send exactly one of prompt and messages", "prompt")
    if body.prompt is not None:
        tokens = tokenizer.encode(body.prompt)
    else:
        try:
            text = tokenizer.apply_chat_template([m.for_template() for m in body.messages or []])
        except Exception as exc:
            raise bad_request(f"the chat template rejected the messages: {exc}", "messages") from None
        tokens = tokenizer.encode(text)
    return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=state.config.max_model_len)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(request: Request, body: DetokenizeRequest) -> DetokenizeResponse:
    state: WorkerState = request.app.state.worker
    runner = state.loaded()
    check_model(state, body.model)
    vocab = runner.engine.model_config.vocab_size
    if any(t >= vocab for t in body.tokens):
        raise bad_request(f"token ids must be in [0, {vocab})", "tokens")
    return DetokenizeResponse(prompt=runner.engine.tokenizer.decode(body.tokens))
