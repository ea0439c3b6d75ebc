"""Request validation errors in the client's terms: the parameter's path as the client wrote it (not
pydantic's union-member tags such as `constrained-str`), what is wrong, and `param` naming it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from goodput.worker_image.errors import APIError, bad_request

# The required field of each route's body, named when the body is missing altogether.
REQUIRED_FIELD = {
    "/v1/completions": "prompt",
    "/v1/chat/completions": "messages",
    "/tokenize": "prompt",
    "/detokenize": "tokens",
}
_UNION_TAG = re.compile(r"[\[\-<]|^(str|int|float|bool|list|dict|none|json-or-python)$|^[A-Z]")


def _path(loc: Sequence[int | str]) -> list[int | str]:
    """The client's path: list indices and field names, without pydantic's tags for union members."""
    return [part for part in loc if isinstance(part, int) or not _UNION_TAG.search(part)]


def _label(path: list[int | str]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def client_error(errors: Sequence[dict[str, Any]], route: str) -> APIError:
    """The 400 for FastAPI's validation errors of one request."""
    if not errors:
        return bad_request("invalid request")
    # Our own checks (value errors) say more than a type mismatch with one member of a union.
    error = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    kind, loc = error.get("type", ""), tuple(error.get("loc", ()))
    if kind == "json_invalid":
        return bad_request(f"malformed JSON body: {error.get('ctx', {}).get('error', error['msg'])}")
    path = _path(loc[1:])  # after "body", "header" or "query"
    if not path:
        required = REQUIRED_FIELD.get(route)
        if kind == "missing" and required is not None:
            return bad_request(f"the request body is missing: send a JSON object with {required!r}", required)
        return bad_request(f"the request body is invalid: {error['msg']}")
    label = _label(path)
    param = next(str(part) for part in path if isinstance(part, str))
    if kind == "missing":
        message = f"{label} is required"
    elif kind == "extra_forbidden":
        message = f"{label} is not a parameter this server supports"
    else:
        message = f"{label}: {str(error['msg']).removeprefix('Value error, ')}"
    return bad_request(message, param)
