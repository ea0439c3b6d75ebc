"""Fixtures: fake workers on loopback and a router app in front of them, all in the test's event loop.

The fake worker streams SSE chunks, answers /metrics with vLLM's gauge names, and can be told to hang (a worker
that stops answering); it rejects a body without `model` with a 400, as the worker does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from goodput.policies.routing import RoutingPolicy
from goodput.router.app import Router, create_app
from goodput.router.dispatch import QueueLimits, Tier
from goodput.router.metrics import RouterMetrics

MakeRouter = Callable[..., Awaitable[tuple[Router, str]]]


@dataclass
class FakeWorker:
    name: str
    chunks: int = 3
    chunk_delay_s: float = 0.0
    first_delay_s: float = 0.0
    tail_delay_s: float = 0.0  # between [DONE] and the stream's end
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    hang: asyncio.Event = field(default_factory=asyncio.Event)  # set: every request and scrape hangs
    draining: bool = False  # completions answer 503, as a worker does after SIGTERM
    set_cookie: str | None = None  # a Set-Cookie header on every streamed answer
    received: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> FakeWorker:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _stall(self) -> None:
        if self.hang.is_set():
            await asyncio.sleep(3600)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        await self._stall()
        if self.draining:
            return web.json_response(
                {"error": {"message": "draining", "type": "service_unavailable"}}, status=503
            )
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "malformed JSON body", "type": "x"}}, status=400)
        if "model" not in body:
            return web.json_response(
                {
                    "error": {
                        "message": "model: Field required",
                        "type": "invalid_request_error",
                        "param": "model",
                    }
                },
                status=400,
            )
        self.received.append(body)
        self.headers.append(dict(request.headers))
        if not body.get("stream"):
            await asyncio.sleep(self.first_delay_s)
            return web.json_response({"worker": self.name, "choices": [{"text": "x" * self.chunks}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.set_cookie is not None:
            response.headers["Set-Cookie"] = self.set_cookie
        await response.prepare(request)
        await asyncio.sleep(self.first_delay_s)
        for i in range(self.chunks):
            data = json.dumps({"worker": self.name, "choices": [{"index": 0, "text": str(i)}]})
            await response.write(f"data: {data}\n\n".encode())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await response.write(b"data: [DONE]\n\n")
        await asyncio.sleep(self.tail_delay_s)
        await response.write_eof()
        return response

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _metrics(self, _: web.Request) -> web.Response:
        await self._stall()
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="fake"}} {self.running}.0\n'
            f'vllm:num_requests_waiting{{model_name="fake"}} {self.waiting}.0\n'
            f'vllm:kv_cache_usage_perc{{model_name="fake"}} {self.kv_usage}\n'
        )
        return web.Response(text=text, content_type="text/plain")


@pytest_asyncio.fixture
async def workers() -> AsyncIterator[Callable[..., Awaitable[FakeWorker]]]:
    started: list[FakeWorker] = []

    async def start(name: str, **kwargs: Any) -> FakeWorker:
        worker = await FakeWorker(name, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.hang.clear()
        await worker.close()


@pytest_asyncio.fixture
async def make_router() -> AsyncIterator[MakeRouter]:
    servers: list[TestServer] = []

    async def make(
        tiers: dict[str, list[str]],
        default_class: str = "interactive",
        policy: RoutingPolicy | None = None,
        limits: QueueLimits | None = None,
        cache_blocks: int = 1000,
        **router_kwargs: Any,
    ) -> tuple[Router, str]:
        metrics = RouterMetrics()
        built = {}
        for name, urls in tiers.items():
            tier = Tier(name, policy or RoutingPolicy(), limits or QueueLimits(), metrics, cache_blocks)
            tier.set_endpoints(urls)
            built[name] = tier
        router = Router(built, default_class, metrics, **router_kwargs)  # type: ignore[arg-type]
        server = TestServer(create_app(router))
        await server.start_server()
        servers.append(server)
        return router, str(server.make_url("")).rstrip("/")

    yield make
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
