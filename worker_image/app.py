"""The ASGI application: loading the model, the request gate in front of everything, OpenAI-shaped errors,
the probes and metrics, the API key, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from goodput.worker_image import routes
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.engine_thread import EngineRunner
from goodput.worker_image.errors import RETRY_AFTER_S, APIError
from goodput.worker_image.protocol import ErrorResponse
from goodput.worker_image.sampling import SamplingParams
from goodput.worker_image.state import ServeOptions, WorkerState
from goodput.worker_image.validation import client_error

logger = logging.getLogger("goodput.worker")

GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def max_body_bytes(max_model_len: int) -> int:
    """Room for a full context even as escaped JSON (up to ~32 bytes a token), plus the other fields."""
    return 32 * max_model_len + 65536


def warm_up(engine: LLMEngine) -> None:
    """One short generation before the worker reports ready, so the first user request does not pay for
    torch's first-call costs (and stall the event loop behind them)."""
    prompt = engine.tokenizer.encode("warm up") or [0]
    engine.generate([prompt], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))


class RequestGate:
    """Outermost ASGI layer. Stamps each request's arrival before its body is read (so TTFT covers parsing,
    as clients see it); turns generation requests away (503 draining/loading, 429 queue full) before any
    parsing, so overload costs the engine thread as little CPU as possible; bounds the body, so one huge
    upload cannot exhaust the worker's memory."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: WorkerState, max_body_bytes: int
    ) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrival"] = time.monotonic()
        if scope["method"] == "POST" and scope["path"] in GENERATION_PATHS:
            try:
                self.state.admit()
            except APIError as refusal:
                await refusal.response()(scope, receive, send)
                return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            error = APIError(
                413, f"the request body exceeds {self.max_body_bytes} bytes", code="body_too_large"
            )
            await error.response()(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # a chunked upload: FastAPI turns this into a 400
                raise ValueError(f"the request body exceeds {self.max_body_bytes} bytes")
            return message

        await self.app(scope, bounded_receive, send)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        400: "Invalid request: malformed JSON, wrong types, invalid parameters or an over-long prompt",
        404: "Unknown model",
        413: "The request body is too large for this model's context",
        429: "The request queue is full; see Retry-After",
        503: "Draining or still loading; see Retry-After",
    }.items()
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"}
}
_BEARER = HTTPBearer(auto_error=False, description="The API key, when the worker is started with one")


def create_app(
    config: EngineConfig,
    options: ServeOptions,
    engine: LLMEngine | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The ASGI app. Without `engine`, the model loads on a background thread while /health already answers."""
    model_name = options.served_model_name or config.model
    state = WorkerState(config, model_name)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def attach(loaded: LLMEngine) -> None:
            state.runner = EngineRunner(loaded, loop, state.metrics)
            state.runner.start()
            logger.info("model %s loaded; ready", model_name)

        def load() -> None:
            try:
                loaded = LLMEngine(config)
                warm_up(loaded)
            except Exception as exc:
                logger.exception("loading the model failed")
                with contextlib.suppress(RuntimeError):  # the server already stopped
                    loop.call_soon_threadsafe(_load_failed, exc)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(attach, loaded)

        def _load_failed(exc: BaseException) -> None:
            state.load_error = exc
            if on_fatal is not None:
                on_fatal(exc)

        if engine is not None:
            attach(engine)
        else:
            threading.Thread(target=load, name="goodput-load", daemon=True).start()
        yield
        if state.runner is not None:
            state.runner.abort_all()
            state.runner.stop()

    app = FastAPI(
        title="goodput worker",
        version="0.1.0",
        description="OpenAI-compatible completions and chat served by the goodput engine.",
        lifespan=lifespan,
    )
    app.state.worker = state
    app.add_middleware(RequestGate, state=state, max_body_bytes=max_body_bytes(config.max_model_len))

    @app.exception_handler(APIError)
    async def on_api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """400, not FastAPI's 422, in the client's terms: `param` is the top-level field."""
        return client_error(exc.errors(), request.url.path).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = APIError(
            exc.status_code, str(exc.detail), "invalid_request_error", headers=dict(exc.headers or {})
        )
        return error.response()

    api_key = (options.api_key or "").encode()

    async def require_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, api_key):
            raise APIError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(require_api_key)] if options.api_key else []
    errors = _ERRORS | (_AUTH_ERRORS if options.api_key else {})

    @app.get(
        "/health",
        summary="Liveness: 200 unless the engine failed (also while the model loads)",
        responses={503: {"description": "the engine failed; restart the worker"}},
    )
    async def health() -> JSONResponse:
        if state.healthy:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "engine failed"}, status_code=503)

    @app.get(
        "/ready",
        summary="Readiness: 200 once the model is loaded, 503 while loading or draining",
        responses={503: {"description": "loading or draining"}},
    )
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready"})
        status = "draining" if state.draining else "loading" if state.healthy else "failed"
        return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get(
        "/metrics",
        summary="Prometheus metrics with vLLM's names",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        if state.runner is not None:
            state.metrics.refresh(state.runner.stats())
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    app.include_router(routes.router, dependencies=guarded, responses=errors)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, corrected: validation errors are 400 (not 422) and `model` names ours."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    for parameter in operation.get("parameters", []):  # a header is absent, never null
                        options = parameter["schema"].pop("anyOf", None)
                        if options:
                            parameter["schema"] |= next(o for o in options if o.get("type") != "null")
            for name in ("CompletionRequest", "ChatCompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"] = {
                    "anyOf": [{"type": "string", "enum": [model_name]}, {"type": "null"}],
                    "title": "Model",
                }
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
