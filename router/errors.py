"""Errors the router answers itself, in OpenAI's error body (the shape the worker and clients already use)."""

from __future__ import annotations

import json
import math

from aiohttp import web


class RouterError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.retry_after_s = retry_after_s

    def response(self) -> web.Response:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.Response(
            status=self.status, text=json.dumps(body), content_type="application/json", headers=headers
        )


def bad_request(message: str, param: str | None = None) -> RouterError:
    return RouterError(400, message, param=param)


def too_many(message: str, code: str, retry_after_s: float) -> RouterError:
    return RouterError(429, message, "rate_limit_error", code=code, retry_after_s=retry_after_s)


def unavailable(message: str, code: str, retry_after_s: float) -> RouterError:
    return RouterError(503, message, "service_unavailable", code=code, retry_after_s=retry_after_s)
