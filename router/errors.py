"""Errors the router answers itself, in OpenAI's error body (the shape the worker and clients already use)."""

from __future__ import annotations

import json
import math

from aiohttp import web

from goodput.worker_image.contract import OpenAIError


class RouterError(OpenAIError):
    """An error the router answers itself in OpenAI's shape, through aiohttp."""

    def response(self) -> web.Response:
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return web.Response(
            status=self.status, text=json.dumps(self.body()), content_type="application/json", headers=headers
        )


def _retry_after(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds, never under one (clients treat 0 as 'now')."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def bad_request(message: str, param: str | None = None) -> RouterError:
    return RouterError(400, message, param=param)


def too_many(message: str, code: str, retry_after_s: float) -> RouterError:
    return RouterError(429, message, "rate_limit_error", code=code, headers=_retry_after(retry_after_s))


def unavailable(message: str, code: str, retry_after_s: float) -> RouterError:
    return RouterError(503, message, "service_unavailable", code=code, headers=_retry_after(retry_after_s))
