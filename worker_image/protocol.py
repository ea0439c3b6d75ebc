"""The OpenAI wire format the worker speaks: request bodies (strictly typed) and response bodies.

Request bodies take declared fields only in their JSON types and refuse any other field (a 400 naming it), so
a parameter the worker does not implement is never ignored quietly. Shapes the worker does not serve (several
prompts in one request, image content) get a message that says so. The server builds its OpenAPI document from
these models, and the fuzz tests read it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class _StrictBody(BaseModel):
    """Request bodies: JSON types as declared (no "1" for 1, no false for 0); any other field is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_StrictBody):
    include_usage: bool = False
    continuous_usage_stats: bool = Field(
        default=False, description="Not supported: must be false", json_schema_extra={"enum": [False]}
    )


class JSONSchemaFormat(_StrictBody):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_StrictBody):
    """`text`, `json_object` (any JSON object) or `json_schema` (JSON valid under the schema)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


PriorityName = Literal["interactive", "batch"]
NonEmptyStr = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class GenerationRequest(_StrictBody):
    """Fields shared by completions and chat."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 disables top-k (vLLM extension)")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: NonEmptyStr | list[NonEmptyStr] | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    ignore_eos: bool = False
    n: int = Field(default=1, ge=1, le=16, description="Completions to generate for the prompt")
    best_of: int | None = Field(default=None, ge=1, description="Only n (the default) is supported")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, description="Token id (as a string) -> bias added to its logit"
    )
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    priority: PriorityName | None = Field(default=None, description="Overrides the x-goodput-priority header")
    service_tier: Literal["auto", "default", "flex", "priority"] | None = Field(
        default=None,
        description="OpenAI's tier, as the goodput router reads it: flex is the batch class, priority the "
        "interactive one; `priority` wins over it",
    )
    user: str | None = None


def _one_prompt(value: object) -> object:
    """Say plainly what is wrong with a prompt before the type checks list every shape it failed."""
    if value == "" or value == []:
        raise ValueError("the prompt is empty")
    if isinstance(value, list) and len(value) > 1 and all(isinstance(p, str | list) for p in value):
        raise ValueError(
            f"a list of {len(value)} prompts is not supported: send one prompt per request "
            "(use n for several completions of one prompt)"
        )
    return value


class CompletionRequest(GenerationRequest):
    prompt: (
        NonEmptyStr
        | TokenIds
        | Annotated[list[NonEmptyStr], Field(min_length=1, max_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1, max_length=1)]
    ) = Field(description="One prompt: text or token ids, optionally in a one-element list")
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = Field(
        default=False, description="Not supported: must be false", json_schema_extra={"enum": [False]}
    )

    _check_prompt = field_validator("prompt", mode="before")(_one_prompt)


class TextPart(_StrictBody):
    type: Literal["text"]
    text: str


class FunctionCall(_StrictBody):
    name: str
    arguments: str


class ToolCall(_StrictBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_StrictBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: object) -> object:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind is not None and kind != "text":
                    raise ValueError(
                        f"content parts of type {kind!r} are not supported; only 'text' parts are"
                    )
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates read it."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class FunctionDefinition(_StrictBody):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_StrictBody):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_StrictBody):
    name: str


class NamedToolChoice(_StrictBody):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="'required' or a named function are served by constrained decoding; 'auto' is not",
    )
    parallel_tool_calls: bool = True


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens served from the prefix cache")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = []


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as JSON text")


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] = []


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "goodput"
    max_model_len: int


class TokenizeRequest(_StrictBody):
    """vLLM's /tokenize: a prompt, or chat messages rendered through the chat template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(_StrictBody):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class DetokenizeResponse(BaseModel):
    prompt: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
