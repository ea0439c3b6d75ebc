"""Tool calls through constrained decoding: `tool_choice` "required" or a named function becomes a JSON
schema the output must match, and the output becomes OpenAI's `tool_calls`.

"required" asks for a JSON array of {"name", "parameters"} objects, one of the tools' each (at most one when
`parallel_tool_calls` is false); a named function asks for its arguments object alone. "auto" would need a
model-specific parser to tell prose from a call, which this worker does not have, so it is refused.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from goodput.worker_image.errors import bad_request
from goodput.worker_image.protocol import ChatCompletionRequest, ResponseFunctionCall, ResponseToolCall, Tool


def tool_schema(body: ChatCompletionRequest) -> tuple[dict[str, Any], str | None] | None:
    """The schema the output must match and, for a named function, its name; None when tools are off."""
    choice, tools = body.tool_choice, body.tools or []
    if choice is None and not tools:
        return None
    if not tools and choice != "none":
        raise bad_request("tool_choice needs tools: list the functions the model may call", "tool_choice")
    if choice is None or choice == "auto":
        raise bad_request(
            "tool_choice 'auto' is not supported (this worker has no tool-call parser): use 'required', "
            "a named function, or 'none'",
            "tool_choice",
        )
    if choice == "none":
        return None
    if body.response_format is not None and body.response_format.type != "text":
        raise bad_request("response_format cannot be combined with tool_choice", "response_format")
    if choice == "required":
        calls: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [_call_schema(tool) for tool in tools]},
        }
        if not body.parallel_tool_calls:
            calls["maxItems"] = 1
        return calls, None
    named = [tool for tool in tools if tool.function.name == choice.function.name]
    if not named:
        raise bad_request(f"tool_choice names {choice.function.name!r}, which is not in tools", "tool_choice")
    return named[0].function.parameters, named[0].function.name


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "parameters": tool.function.parameters},
        "required": ["name", "parameters"],
        "additionalProperties": False,
    }


def tool_calls(text: str, named: str | None) -> list[ResponseToolCall] | None:
    """The calls in a finished output; None if it is not complete JSON (cut off by max_tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    calls = [(named, value)] if named is not None else [(c["name"], c["parameters"]) for c in value]
    return [
        ResponseToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}",
            function=ResponseFunctionCall(name=name, arguments=json.dumps(args)),
        )
        for name, args in calls
    ]
