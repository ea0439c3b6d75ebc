"""The router's HTTP side: OpenAI's endpoints, streamed through to the replica a tier picks, byte for byte.

Order of checks: API key (401), body (400), tenant quota (429), then the tier's dispatch (429/503 when its queue
is full or its wait runs out). A replica that fails before answering (connection refused or reset, or taken
out of rotation by a refresh), or answers 503 (draining or not ready), gets the request sent elsewhere (to the other tier when that was its tier's
only replica in rotation); once
bytes have streamed to the client a failure ends only that stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from goodput.router.dispatch import Tier
from goodput.router.errors import RouterError, unavailable
from goodput.router.metrics import RouterMetrics
from goodput.router.quota import Quotas
from goodput.router.replicas import Lease
from goodput.router.requests import CLASS_HEADER, RequestClass, parse

TENANT_HEADER = "X-Goodput-Tenant"
MAX_ATTEMPTS = 3  # replicas tried for one request before 503
MAX_BODY_BYTES = 64 * 1024 * 1024
# request headers the replica needs; hop-by-hop and routing headers stay here
FORWARDED_REQUEST = ("Authorization", "Content-Type", "Accept", "X-Request-Id", "traceparent")
DROPPED_RESPONSE = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "server", "date"}
)


@dataclass(slots=True)
class Timing:
    """A request's arrival and its time in tiers' queues (perf_counter seconds): its first byte is timed by them."""

    arrived: float
    queued: float = 0.0


@dataclass
class Router:
    tiers: dict[RequestClass, Tier]
    default_class: RequestClass
    metrics: RouterMetrics
    quotas: Quotas = field(default_factory=Quotas)
    api_key: str | None = None
    session: aiohttp.ClientSession | None = None

    @property
    def block_tokens(self) -> int:
        """Prompts are cut into the routing policy's blocks (every tier routes by the same policy)."""
        return next(iter(self.tiers.values())).policy.block_tokens

    def tier_for(self, request_class: RequestClass) -> Tier:
        """The class's own tier while it has a replica in rotation, else a tier that has one (the class then only
        orders that tier's queue). With none in rotation (scaled to zero, or starting) the request waits in the
        default class's tier: the one the operator always plans and starts first when it wakes the service."""
        own = self.tiers.get(request_class)
        if own is not None and own.in_rotation():
            return own
        serving = [t for t in self.tiers.values() if t.in_rotation()]
        if serving:
            return serving[0]
        return self.tiers.get(self.default_class) or own or next(iter(self.tiers.values()))

    def tenant(self, request: web.Request) -> str:
        named = request.headers.get(TENANT_HEADER)
        if named:
            return named
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and len(auth) > 7:
            return "key-" + hashlib.sha256(auth[7:].encode()).hexdigest()[:12]
        return "anonymous"

    def check_key(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            self.metrics.rejections.labels("unauthorized").inc()
            raise RouterError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )


ROUTER = web.AppKey("router", Router)


async def _completions(request: web.Request, chat: bool) -> web.StreamResponse:
    timing = Timing(time.perf_counter())
    arrived = time.monotonic()
    router: Router = request.app[ROUTER]
    try:
        router.check_key(request)
        body = await request.read()
        routed = parse(
            body, request.headers.get(CLASS_HEADER), router.default_class, router.block_tokens, chat
        )
        tenant = router.tenant(request)
        router.quotas.admit(tenant, routed.prompt_tokens + (routed.max_tokens or 0), time.monotonic())
    except RouterError as error:
        return error.response()
    tier = router.tier_for(routed.request_class)
    try:
        for _ in range(MAX_ATTEMPTS):
            tier = router.tier_for(routed.request_class)  # a retry may find its tier's only replica gone
            lease = await tier.acquire(routed, arrived)
            timing.queued += lease.queued_s
            response = await _forward(request, router, tier, lease, body, timing, routed.stream)
            if response is not None:
                tier.seen.answered(response.status)
                return response
        raise unavailable("replicas failed before answering; retry", "upstream_failed", 1)
    except RouterError as error:
        router.metrics.requests.labels(tier.name, str(error.status)).inc()
        return error.response()
    finally:
        router.quotas.release(tenant)


async def _forward(
    request: web.Request,
    router: Router,
    tier: Tier,
    lease: Lease,
    body: bytes,
    timing: Timing,
    stream: bool,
) -> web.StreamResponse | None:
    """Stream the replica's answer through; None when the replica failed before answering (try another).

    At the first byte sent on, two timings: the TTFT the client sees (arrival to now; streamed 200s only, whose
    first byte is a first token), and the router's own share of it (that, less the queue wait and the
    replica's time to its first byte)."""
    assert router.session is not None
    task = asyncio.current_task()
    lease.task = task
    headers = {h: request.headers[h] for h in FORWARDED_REQUEST if h in request.headers}
    response: web.StreamResponse | None = None
    sent = time.perf_counter()
    try:
        async with router.session.post(
            lease.replica.url + request.path, data=body, headers=headers
        ) as upstream:
            if upstream.status == 503:  # draining, loading or failed: not this replica, for now
                lease.task = None
                tier.mark_down(lease.replica)
                return None
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in DROPPED_RESPONSE},
            )
            first = await upstream.content.readany()
            upstream_s = time.perf_counter() - sent
            tier.answered(lease)
            await response.prepare(request)
            if first:
                await response.write(first)
                since = time.perf_counter() - timing.arrived
                tier.seen.added.observe(max(since - timing.queued - upstream_s, 0.0))
                if stream and upstream.status == 200:
                    tier.seen.ttft.observe(since)
                async for chunk in upstream.content.iter_any():  # the hot path: nothing but the write
                    await response.write(chunk)
            await response.write_eof()
            return response
    except asyncio.CancelledError:
        if lease.rerouted and task is not None and not response_started(response):
            task.uncancel()
            return None
        raise
    except (aiohttp.ClientConnectionError, TimeoutError):
        if response_started(response):
            # the client closed first (often as soon as it read [DONE]): nothing to tell it
            if _client_left(request):
                return response
            raise  # mid-stream: only this stream fails
        lease.task = None  # this request retries by itself; marking the replica down must not cancel it
        tier.mark_down(lease.replica)
        return None
    finally:
        lease.task = None
        tier.release(lease)


def response_started(response: web.StreamResponse | None) -> bool:
    return response is not None and response.prepared


def _client_left(request: web.Request) -> bool:
    """The client's connection is closing or closed (before aiohttp has cancelled this handler for it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _models(request: web.Request) -> web.StreamResponse:
    router: Router = request.app[ROUTER]
    try:
        router.check_key(request)
    except RouterError as error:
        return error.response()
    assert router.session is not None
    for tier in router.tiers.values():
        for replica in tier.replicas.values():
            if not replica.healthy:
                continue
            try:
                async with router.session.get(replica.url + "/v1/models", headers=_auth(request)) as upstream:
                    return web.Response(
                        status=upstream.status, body=await upstream.read(), content_type="application/json"
                    )
            except aiohttp.ClientError:
                tier.mark_down(replica)
    return unavailable("no replica is ready", "no_replica", 1).response()


def _auth(request: web.Request) -> dict[str, str]:
    return {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}


async def _metrics(request: web.Request) -> web.Response:
    router: Router = request.app[ROUTER]
    for tier in router.tiers.values():
        router.metrics.in_flight.labels(tier.name).set(sum(r.in_flight for r in tier.replicas.values()))
    return web.Response(
        body=generate_latest(router.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _completions(request, chat=True)


async def _text(request: web.Request) -> web.StreamResponse:
    return await _completions(request, chat=False)


def create_app(router: Router) -> web.Application:
    """The app; its session to the replicas opens with it (one connection pool, no limit: the tiers bound)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ROUTER] = router

    async def session_context(_: web.Application):  # type: ignore[no-untyped-def]
        if router.session is None:
            router.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
                # one session carries every client's requests: a cookie a replica sets for one must never go out
                # with another's (the default jar keeps those of replicas named by host, as --upstream may be)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        yield
        await router.session.close()

    app.cleanup_ctx.append(session_context)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _text)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _health)
    return app
