"""What the router reads of a request body: its class, its size and its prompt's prefix blocks.

Only the fields routing needs are checked here (a wrong type is a 400 naming the field); everything else is the
worker's to validate, and its 400 streams back unchanged. Prompts are cut into fixed-size blocks whose ids are
chained hashes, so equal ids mean an equal prefix up to and including that block. Text is measured in characters
at CHARS_PER_TOKEN (the router has no tokenizer); token-id prompts are measured exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from goodput.router.errors import bad_request

CHARS_PER_TOKEN = 4  # English text under BPE tokenizers; an estimate for load accounting only
RequestClass = Literal["interactive", "batch"]
CLASS_HEADER = "X-Goodput-Class"
# OpenAI's service_tier values: flex is the cheaper, slower tier (our batch tier), priority the fast one;
# auto and default mean "the service's class".
SERVICE_TIERS: dict[str, RequestClass | None] = {
    "flex": "batch",
    "priority": "interactive",
    "auto": None,
    "default": None,
}
CLASSES: tuple[RequestClass, ...] = ("interactive", "batch")


@dataclass(frozen=True, slots=True)
class Routed:
    """A parsed request: its class, estimated size and prefix blocks (chained hashes)."""

    request_class: RequestClass
    prompt_tokens: int
    max_tokens: int | None
    blocks: tuple[int, ...]
    stream: bool


def parse(
    body: bytes, header_class: str | None, default_class: RequestClass, block_tokens: int, chat: bool
) -> Routed:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise bad_request(f"malformed JSON body: {error}") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    request_class = _request_class(data.get("service_tier"), header_class) or default_class
    max_tokens = _max_tokens(data, "max_completion_tokens" if chat else "max_tokens")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream: must be a boolean", "stream")
    if chat:
        text = _chat_text(data.get("messages"))
        tokens, blocks = len(text) // CHARS_PER_TOKEN, _text_blocks(text, block_tokens)
    else:
        tokens, blocks = _prompt(data.get("prompt"), block_tokens)
    return Routed(request_class, tokens, max_tokens, blocks, stream)


def _request_class(service_tier: Any, header: str | None) -> RequestClass | None:
    from_body: RequestClass | None = None
    if service_tier is not None:
        if not isinstance(service_tier, str) or service_tier not in SERVICE_TIERS:
            raise bad_request(f"service_tier: must be one of {sorted(SERVICE_TIERS)}", "service_tier")
        from_body = SERVICE_TIERS[service_tier]
    if header is None:
        return from_body
    value = header.strip().lower()
    if value not in CLASSES:
        raise bad_request(f"{CLASS_HEADER} header: must be one of {list(CLASSES)}, got {header!r}")
    if from_body is not None and from_body != value:
        raise bad_request(
            f"service_tier {service_tier!r} asks for the {from_body} class but {CLASS_HEADER} says {value}",
            "service_tier",
        )
    return value  # type: ignore[return-value]


def _max_tokens(data: dict[str, Any], preferred: str) -> int | None:
    for field in (preferred, "max_tokens"):
        value = data.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(f"{field}: must be a positive integer", field)
        return value
    return None


def _chat_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: must be a non-empty list", "messages")
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages.{i}: must be an object", "messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: the text ones make the prompt
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{message.get('role', '')}\n{content if isinstance(content, str) else ''}\n")
    return "".join(parts)


def _prompt(prompt: Any, block_tokens: int) -> tuple[int, tuple[int, ...]]:
    if isinstance(prompt, str):
        return len(prompt) // CHARS_PER_TOKEN, _text_blocks(prompt, block_tokens)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        if not all(0 <= t < 2**31 for t in prompt):
            raise bad_request("prompt: token ids must be in [0, 2^31)", "prompt")
        return len(prompt), _id_blocks(prompt, block_tokens)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return _prompt(prompt[0], block_tokens)
    raise bad_request("prompt: must be a string or a non-empty list of token ids", "prompt")


def _prefix_ids(data: bytes, block_bytes: int) -> tuple[int, ...]:
    """One id per full block: the hash of everything up to the block's end (one running hash, copied per block)."""
    running = hashlib.blake2b(digest_size=8)
    ids = []
    view = memoryview(data)
    for end in range(block_bytes, len(data) + 1, block_bytes):
        running.update(view[end - block_bytes : end])
        ids.append(int.from_bytes(running.copy().digest(), "little"))
    return tuple(ids)


def _text_blocks(text: str, block_tokens: int) -> tuple[int, ...]:
    """Only full blocks: a partial last block is never shared (vLLM caches full blocks only)."""
    return _prefix_ids(text.encode("utf-8", "surrogatepass"), block_tokens * CHARS_PER_TOKEN)


def _id_blocks(ids: list[int], block_tokens: int) -> tuple[int, ...]:
    return _prefix_ids(b"".join(t.to_bytes(4, "little") for t in ids), block_tokens * 4)
