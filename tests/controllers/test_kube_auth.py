"""The operator's writes survive a service-account token rotation: on 401 the client logs in once more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import kopf
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from goodput.controllers.kube import KubeClient, KubeError

PATH = "/api/v1/namespaces/team-a/configmaps/tiny"


class TokenCheckingServer:
    """Answers GET on one ConfigMap for the current token only, 401 (as the API server words it) otherwise."""

    def __init__(self) -> None:
        self.token = "first"
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        self.seen.append(sent)
        if sent != f"Bearer {self.token}":
            status = {
                "kind": "Status",
                "status": "Failure",
                "reason": "Unauthorized",
                "message": "Unauthorized",
            }
            return web.json_response(status, status=401)
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "tiny"}})


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[TokenCheckingServer, str]]:
    server = TokenCheckingServer()
    app = web.Application()
    app.router.add_get(PATH, server.handle)
    async with TestServer(app, host="127.0.0.1") as http:
        yield server, str(http.make_url(""))


def client_for(url: str, token: str, relogin: Callable[[], kopf.ConnectionInfo | None] | None) -> KubeClient:
    return KubeClient.connect(
        kopf.ConnectionInfo(server=url, token=token), timeout_s=5, max_in_flight=8, relogin=relogin
    )


@pytest.mark.asyncio
async def test_a_rotated_token_is_read_again_once_and_then_used(api: tuple[TokenCheckingServer, str]) -> None:
    server, url = api
    logins: list[str] = []

    def relogin() -> kopf.ConnectionInfo:
        logins.append(server.token)
        return kopf.ConnectionInfo(server=url, token=server.token)

    client = client_for(url, "first", relogin)
    try:
        assert (await client.get("ConfigMap", "team-a", "tiny"))["metadata"]["name"] == "tiny"
        server.token = "second"  # the kubelet rewrote the projected token file
        results = await asyncio.gather(*(client.get("ConfigMap", "team-a", "tiny") for _ in range(5)))
        assert all(r["kind"] == "ConfigMap" for r in results)
        assert logins == ["second"], "requests rejected together log in once"
        before = len(server.seen)
        await client.get("ConfigMap", "team-a", "tiny")
        assert server.seen[before:] == ["Bearer second"]
    finally:
        await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("relogin_token", [None, "first"], ids=["no-relogin", "same-credentials"])
async def test_a_401_that_a_new_login_cannot_cure_is_an_error_without_retries(
    api: tuple[TokenCheckingServer, str], relogin_token: str | None
) -> None:
    server, url = api
    server.token = "revoked-elsewhere"
    relogin = (
        None if relogin_token is None else (lambda: kopf.ConnectionInfo(server=url, token=relogin_token))
    )
    client = client_for(url, "first", relogin)
    try:
        with pytest.raises(KubeError) as rejected:
            await client.get("ConfigMap", "team-a", "tiny")
        assert rejected.value.status == 401 and rejected.value.reason == "Unauthorized"
        assert server.seen == ["Bearer first"]
    finally:
        await client.close()
