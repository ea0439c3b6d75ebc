"""The EndpointSlice watch against a small in-process API server: list, then watch events, then relist."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from goodput.policies.routing import RoutingPolicy
from goodput.router.dispatch import QueueLimits, Tier
from goodput.router.endpoints import SERVICE_NAME_LABEL, watch_tier
from goodput.router.metrics import RouterMetrics

pytestmark = pytest.mark.asyncio


def endpoint_slice(name: str, *addresses: tuple[str, bool]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: "svc-interactive"}},
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a, ready in addresses],
    }


class Api:
    server = ""
    ssl = True

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer token"}


async def test_watch_follows_ready_endpoints() -> None:
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    seen: list[dict[str, str]] = []

    async def slices(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        assert request.headers["Authorization"] == "Bearer token"
        if request.query.get("watch") != "1":
            items = [endpoint_slice("a", ("10.0.0.1", True), ("10.0.0.2", False))]
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": items})
        response = web.StreamResponse()
        await response.prepare(request)
        while (event := await events.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        return response

    app = web.Application()
    app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices", slices)
    server = TestServer(app)
    await server.start_server()
    api = Api()
    api.server = str(server.make_url("")).rstrip("/")
    tier = Tier("interactive", RoutingPolicy(), QueueLimits(), RouterMetrics(), 100)

    async def until(urls: list[str]) -> None:
        for _ in range(200):
            if sorted(tier.replicas) == urls:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{sorted(tier.replicas)} != {urls}")

    async with aiohttp.ClientSession() as session:
        watch = asyncio.create_task(watch_tier(session, api, "ns", "svc-interactive", tier))  # type: ignore[arg-type]
        try:
            await until(["http://10.0.0.1:8000"])
            await events.put(
                {"type": "MODIFIED", "object": endpoint_slice("a", ("10.0.0.1", False), ("10.0.0.2", True))}
            )
            await events.put({"type": "ADDED", "object": endpoint_slice("b", ("10.0.0.3", True))})
            await until(["http://10.0.0.2:8000", "http://10.0.0.3:8000"])
            await events.put({"type": "DELETED", "object": endpoint_slice("b")})
            await until(["http://10.0.0.2:8000"])
        finally:
            watch.cancel()
            await events.put(None)
            await server.close()
    assert seen[0] == {"labelSelector": f"{SERVICE_NAME_LABEL}=svc-interactive"}
    assert seen[1]["watch"] == "1" and seen[1]["resourceVersion"] == "7"
