"""The worker's client errors in OpenAI's shape: one exception carrying status, message and the parameter."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from goodput.worker_image.contract import OpenAIError

RETRY_AFTER_S = 1


class APIError(OpenAIError):
    """An error the worker answers in OpenAI's shape, through FastAPI."""

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def not_found(message: str, param: str | None = None, code: str = "model_not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def unavailable(message: str, code: str) -> APIError:
    return APIError(
        503, message, "service_unavailable", code=code, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def queue_full(detail: str) -> APIError:
    return APIError(
        429,
        f"the server's request queue is full ({detail}); retry later",
        "rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
