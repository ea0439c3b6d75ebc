"""The router against fake workers on loopback: streaming, tiers, errors, auth, queueing, quotas, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest
from aiohttp import web

from goodput.policies.routing import RoutingPolicy
from goodput.router.app import ROUTER
from goodput.router.dispatch import QueueLimits
from goodput.router.quota import Quotas, QuotaSpec
from goodput.router.refresh import refresh_replica
from goodput.router.replicas import Replica

pytestmark = pytest.mark.asyncio

BODY = {"model": "fake", "prompt": "hello", "max_tokens": 4, "stream": True}
ONE_AT_A_TIME = RoutingPolicy(kind="least_load", max_requests=1)


async def post(
    client: aiohttp.ClientSession, url: str, body: object = BODY, **headers: str
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post(url + "/v1/completions", data=data, headers=headers) as r:
        return r.status, await r.text()


def workers_in(text: str) -> set[str]:
    return {json.loads(line[6:])["worker"] for line in text.splitlines() if line.startswith("data: {")}


async def test_streams_chunks_through_as_they_come(workers, make_router, client) -> None:
    worker = await workers("w0", chunks=3, chunk_delay_s=0.6)
    _, url = await make_router({"interactive": [worker.url]})
    start = time.monotonic()
    async with client.post(url + "/v1/completions", json=BODY) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await r.content.readuntil(b"\n\n")
        first_at = time.monotonic() - start
        rest = await r.read()
    assert first.startswith(b"data: {")
    assert first_at < 0.6, "the first chunk waited for the next one"
    assert rest.endswith(b"data: [DONE]\n\n")
    assert worker.received == [BODY]


@pytest.mark.parametrize(
    ("body_extra", "headers", "default", "expected"),
    [
        ({}, {}, "interactive", "i"),
        ({}, {}, "batch", "b"),
        ({"service_tier": "flex"}, {}, "interactive", "b"),
        ({"service_tier": "auto"}, {}, "batch", "b"),
        ({"service_tier": "priority"}, {}, "batch", "i"),
        ({}, {"X-Goodput-Class": "batch"}, "interactive", "b"),
        ({"service_tier": "flex"}, {"X-Goodput-Class": "Batch"}, "interactive", "b"),
    ],
)
async def test_tier_from_the_request(
    workers, make_router, client, body_extra, headers, default, expected
) -> None:
    interactive, batch = await workers("i"), await workers("b")
    _, url = await make_router(
        {"interactive": [interactive.url], "batch": [batch.url]}, default_class=default
    )
    status, text = await post(client, url, {**BODY, **body_extra}, **headers)
    assert status == 200, text
    assert workers_in(text) == {expected}


async def test_a_single_tier_serves_every_class(workers, make_router, client) -> None:
    worker = await workers("i")
    _, url = await make_router({"interactive": [worker.url]})
    status, text = await post(client, url, {**BODY, "service_tier": "flex"})
    assert status == 200
    assert workers_in(text) == {"i"}


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        (b"{not json", {}, None),
        (b"\xff\xfe", {}, None),
        (b"[" * 100_000 + b"]" * 100_000, {}, None),
        (b"", {}, None),
        (b"[1, 2]", {}, None),
        ({**BODY, "service_tier": "turbo"}, {}, "service_tier"),
        ({**BODY, "service_tier": "flex"}, {"X-Goodput-Class": "interactive"}, "service_tier"),
        (BODY, {"X-Goodput-Class": "urgent"}, None),
        ({**BODY, "max_tokens": "many"}, {}, "max_tokens"),
        ({**BODY, "max_tokens": 0}, {}, "max_tokens"),
        ({**BODY, "prompt": {"text": "hi"}}, {}, "prompt"),
        ({**BODY, "stream": "yes"}, {}, "stream"),
    ],
)
async def test_malformed_requests_get_a_400_naming_the_field(
    workers, make_router, client, body, headers, param
) -> None:
    worker = await workers("w0")
    _, url = await make_router({"interactive": [worker.url]})
    status, text = await post(client, url, body, **headers)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert worker.received == []


async def test_the_workers_own_400_comes_back_unchanged(workers, make_router, client) -> None:
    worker = await workers("w0")
    _, url = await make_router({"interactive": [worker.url]})
    status, text = await post(client, url, {"prompt": "hi"})
    assert status == 400
    assert json.loads(text)["error"]["param"] == "model"


async def test_chat_is_routed_and_validated(workers, make_router, client) -> None:
    worker = await workers("w0")
    _, url = await make_router({"interactive": [worker.url]})
    chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with client.post(url + "/v1/chat/completions", json=chat) as r:
        assert r.status == 200
        assert workers_in(await r.text()) == {"w0"}
    async with client.post(url + "/v1/chat/completions", json={"model": "fake", "messages": []}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "messages"


async def test_api_key_is_enforced_before_routing(workers, make_router, client) -> None:
    worker = await workers("w0")
    _, url = await make_router({"interactive": [worker.url]}, api_key="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, text = await post(client, url, BODY, **headers)
        assert status == 401, headers
        assert json.loads(text)["error"]["code"] == "invalid_api_key"
    assert worker.received == []
    status, _ = await post(client, url, BODY, Authorization="Bearer s3cret")
    assert status == 200
    assert worker.headers[0]["Authorization"] == "Bearer s3cret"  # the worker checks the same key
    async with client.get(url + "/v1/models") as r:
        assert r.status == 401
    async with client.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"}) as r:
        assert r.status == 200


async def test_requests_queue_when_every_replica_is_at_its_bound(workers, make_router, client) -> None:
    worker = await workers("w0", first_delay_s=1.0)
    router, url = await make_router(
        {"interactive": [worker.url]}, policy=ONE_AT_A_TIME, limits=QueueLimits(max_queue=1, retry_after_s=2)
    )
    first = asyncio.create_task(post(client, url))
    while not worker.received:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(post(client, url))
    while router.tiers["interactive"].queued < 1:
        await asyncio.sleep(0.01)
    async with client.get(url + "/metrics") as r:
        assert 'goodput:router_queue_depth{tier="interactive"} 1.0' in await r.text()
    async with client.post(url + "/v1/completions", json=BODY) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "2"
        assert (await r.json())["error"]["code"] == "queue_full"
    assert (await first)[0] == 200
    assert (await second)[0] == 200
    async with client.get(url + "/metrics") as r:
        text = await r.text()
    assert 'goodput:router_queue_depth{tier="interactive"} 0.0' in text
    assert 'goodput:router_queue_wait_seconds_count{tier="interactive"} 2.0' in text
    assert 'goodput:router_rejections_total{reason="queue_full"} 1.0' in text


async def test_queue_serves_interactive_first_then_shortest(workers, make_router, client) -> None:
    worker = await workers("w0", first_delay_s=1.0)
    router, url = await make_router({"interactive": [worker.url]}, policy=ONE_AT_A_TIME)
    blocker = asyncio.create_task(post(client, url, {**BODY, "prompt": "block"}))
    while not worker.received:
        await asyncio.sleep(0.01)
    queued = [
        {**BODY, "prompt": "batch", "service_tier": "flex"},
        {**BODY, "prompt": "long", "max_tokens": 500},
        {**BODY, "prompt": "short", "max_tokens": 5},
    ]
    tasks = [asyncio.create_task(post(client, url, body)) for body in queued]
    while router.tiers["interactive"].queued < 3:
        await asyncio.sleep(0.01)
    assert not blocker.done(), "the blocker finished before the queue filled: the test proves nothing"
    await asyncio.gather(blocker, *tasks)
    assert [b["prompt"] for b in worker.received] == ["block", "short", "long", "batch"]


async def test_queue_wait_is_bounded_with_a_clear_503(make_router, client) -> None:
    _, url = await make_router({"interactive": []}, limits=QueueLimits(max_wait_s=0.1))
    status, text = await post(client, url)
    assert status == 503
    assert "no replica of the interactive tier is ready" in json.loads(text)["error"]["message"]


async def test_tenant_quotas(workers, make_router, client) -> None:
    worker = await workers("w0", first_delay_s=0.5)
    quotas = Quotas(
        default=QuotaSpec(tokens_per_s=10, burst_tokens=100),
        tenants={"solo": QuotaSpec(max_concurrent=1)},
    )
    _, url = await make_router({"interactive": [worker.url]}, quotas=quotas)
    # tokens/s: prompt (5 chars → 1 token) + max_tokens 60 fits the bucket once, not twice within 2 s
    body = {**BODY, "max_tokens": 60}
    assert (await post(client, url, body, **{"X-Goodput-Tenant": "a"}))[0] == 200
    async with client.post(url + "/v1/completions", json=body, headers={"X-Goodput-Tenant": "a"}) as r:
        assert r.status == 429
        assert (await r.json())["error"]["code"] == "token_quota"
        assert 1 <= int(r.headers["Retry-After"]) <= 2
    assert (await post(client, url, body, **{"X-Goodput-Tenant": "b"}))[0] == 200  # b has its own bucket
    # concurrency: one in flight at a time
    first = asyncio.create_task(post(client, url, BODY, **{"X-Goodput-Tenant": "solo"}))
    while len(worker.received) < 3:
        await asyncio.sleep(0.01)
    status, text = await post(client, url, BODY, **{"X-Goodput-Tenant": "solo"})
    assert status == 429
    assert json.loads(text)["error"]["code"] == "concurrency_quota"
    assert (await first)[0] == 200
    assert (await post(client, url, BODY, **{"X-Goodput-Tenant": "solo"}))[0] == 200


async def test_a_silent_worker_leaves_rotation_within_one_refresh_and_its_requests_go_elsewhere(
    workers, make_router, client
) -> None:
    good, silent = await workers("good"), await workers("silent")
    router, url = await make_router(
        {"interactive": [silent.url, good.url]}, policy=RoutingPolicy(kind="least_load", max_requests=4)
    )
    tier = router.tiers["interactive"]
    silent.hang.set()
    # least load on an idle fleet picks the first replica: the silent one
    stuck = asyncio.create_task(post(client, url))
    while tier.replicas[silent.url].in_flight < 1:
        await asyncio.sleep(0.01)
    assert router.session is not None
    await asyncio.gather(
        *(refresh_replica(router.session, tier, r, 0.2) for r in list(tier.replicas.values()))
    )
    assert not tier.replicas[silent.url].healthy
    status, text = await asyncio.wait_for(stuck, 2)
    assert status == 200
    assert workers_in(text) == {"good"}
    for _ in range(3):
        assert workers_in((await post(client, url))[1]) == {"good"}
    silent.hang.clear()
    await refresh_replica(router.session, tier, tier.replicas[silent.url], 0.5)
    assert tier.replicas[silent.url].healthy


async def test_a_refused_connection_reroutes(workers, make_router, client) -> None:
    good, gone = await workers("good"), await workers("gone")
    gone_url = gone.url
    await gone.close()
    router, url = await make_router(
        {"interactive": [gone_url, good.url]}, policy=RoutingPolicy(kind="least_load")
    )
    status, text = await post(client, url)
    assert status == 200
    assert workers_in(text) == {"good"}
    assert not router.tiers["interactive"].replicas[gone_url].healthy


async def test_refresh_reads_the_workers_gauges_into_routing(workers, make_router, client) -> None:
    busy, idle = await workers("busy", running=3, waiting=2, kv_usage=0.5), await workers("idle")
    router, url = await make_router(
        {"interactive": [busy.url, idle.url]}, policy=RoutingPolicy(kind="least_load")
    )
    tier = router.tiers["interactive"]
    assert router.session is not None
    for replica in list(tier.replicas.values()):
        await refresh_replica(router.session, tier, replica, 1.0)
    load = tier.replicas[busy.url].load()
    assert (load.running, load.waiting, load.kv_usage) == (3, 2, 0.5)
    assert workers_in((await post(client, url))[1]) == {"idle"}


async def test_prefix_affinity_keeps_a_conversation_on_its_replica(workers, make_router, client) -> None:
    a, b = await workers("a", first_delay_s=1.0), await workers("b", first_delay_s=1.0)
    _router, url = await make_router(
        {"interactive": [a.url, b.url]}, policy=RoutingPolicy(kind="prefix", block_tokens=16)
    )
    history = "system: you are helpful. " * 40  # 1,000 characters: 15 blocks of 16 tokens
    first = asyncio.create_task(post(client, url, {**BODY, "prompt": history + "user: hi"}))
    while not (a.received or b.received):
        await asyncio.sleep(0.01)
    other = workers_in((await post(client, url, {**BODY, "prompt": "unrelated " * 100}))[1])
    assert other != workers_in((await first)[1])  # the first replica was busy prefilling: least work
    again = workers_in((await post(client, url, {**BODY, "prompt": history + "user: and then?"}))[1])
    assert again == workers_in(first.result()[1])
    async with client.get(url + "/metrics") as r:
        text = await r.text()
    assert 'goodput:router_prefix_hit_blocks_total{tier="interactive"} 15.0' in text


async def test_a_class_whose_tier_has_no_replica_goes_to_one_that_has(workers, make_router, client) -> None:
    """A mixed service whose batch tier is scaled to zero (or a one-tier service: the router watches both)."""
    interactive = await workers("i")
    _, url = await make_router(
        {"interactive": [interactive.url], "batch": []}, limits=QueueLimits(max_wait_s=0.2)
    )
    status, text = await post(client, url, {**BODY, "service_tier": "flex"})
    assert status == 200
    assert workers_in(text) == {"i"}


async def _lease_ends_quietly(replica: Replica, caplog: pytest.LogCaptureFixture) -> None:
    """The replica's lease for the request ends within a second, and nothing was logged as an error."""
    for _ in range(50):
        if replica.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert replica.in_flight == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_a_client_leaving_after_done_frees_its_replica_quietly(
    workers, make_router, client, caplog
) -> None:
    """Clients close once they read [DONE], often before the stream's last chunk: no error, the lease ends."""
    worker = await workers("w0", tail_delay_s=0.2)
    router, url = await make_router({"interactive": [worker.url]})
    async with client.post(url + "/v1/completions", json=BODY) as r:
        while (await r.content.readline()).strip() != b"data: [DONE]":
            pass
        r.connection.transport.close()
    await _lease_ends_quietly(router.tiers["interactive"].replicas[worker.url], caplog)


async def test_a_client_whose_connection_is_closing_at_the_stream_s_end_is_no_error(
    workers, make_router, client, caplog, monkeypatch
) -> None:
    """Under load a client's close (right after [DONE]) can reach the router between its last chunk and the end
    of the stream, before aiohttp cancels the handler: the end finds the connection closing. That is the client
    leaving, not an error: nothing is logged, the request is counted, the lease ends."""
    worker = await workers("w0")
    router, url = await make_router({"interactive": [worker.url]})
    write_eof = web.StreamResponse.write_eof

    async def closing_first(self: web.StreamResponse, data: bytes = b"") -> None:
        request = self._req
        if request is not None and ROUTER in request.app and request.transport is not None:
            request.transport.close()  # the router's answer to its client: the client has just hung up
        await write_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write_eof", closing_first)
    with contextlib.suppress(aiohttp.ClientError):
        await post(client, url)
    await _lease_ends_quietly(router.tiers["interactive"].replicas[worker.url], caplog)
    counted = router.metrics.registry.get_sample_value(
        "goodput:router_requests_total", {"tier": "interactive", "code": "200"}
    )
    assert counted == 1


async def test_a_silent_only_replica_sends_its_requests_to_the_other_tier(
    workers, make_router, client
) -> None:
    """A mixed service with one interactive replica: when it goes silent, requests it holds go to the batch tier."""
    silent, batch = await workers("silent"), await workers("batch")
    router, url = await make_router({"interactive": [silent.url], "batch": [batch.url]})
    tier = router.tiers["interactive"]
    silent.hang.set()
    stuck = asyncio.create_task(post(client, url))
    while tier.replicas[silent.url].in_flight < 1:
        await asyncio.sleep(0.01)
    assert router.session is not None
    await refresh_replica(router.session, tier, tier.replicas[silent.url], 0.2)
    status, text = await asyncio.wait_for(stuck, 2)
    assert status == 200
    assert workers_in(text) == {"batch"}
    silent.hang.clear()


async def test_at_zero_requests_wait_in_the_default_tier_which_wakes_first(
    workers, make_router, client
) -> None:
    """Scaled to zero: the queue is exported as 0 before any request, holds a batch-class request in the
    default class's tier (the one the operator wakes), and hands it over when that tier's replica appears."""
    router, url = await make_router({"interactive": [], "batch": []}, limits=QueueLimits(max_wait_s=10))
    async with client.get(url + "/metrics") as r:
        text = await r.text()
    for tier in ("interactive", "batch"):
        assert f'goodput:router_queue_depth{{tier="{tier}"}} 0.0' in text
    held = asyncio.create_task(post(client, url, {**BODY, "service_tier": "flex"}))
    for _ in range(500):
        if router.tiers["interactive"].queued or router.tiers["batch"].queued:
            break
        await asyncio.sleep(0.01)
    assert (router.tiers["interactive"].queued, router.tiers["batch"].queued) == (1, 0)
    async with client.get(url + "/metrics") as r:
        assert 'goodput:router_queue_depth{tier="interactive"} 1.0' in await r.text()
    woken = await workers("i")
    router.tiers["interactive"].set_endpoints([woken.url])
    status, text = await held
    assert status == 200, text
    assert workers_in(text) == {"i"}


async def test_a_draining_worker_sends_its_requests_elsewhere(workers, make_router, client) -> None:
    draining, good = await workers("draining", draining=True), await workers("good")
    router, url = await make_router(
        {"interactive": [draining.url, good.url]},
        policy=RoutingPolicy(kind="least_load"),
        limits=QueueLimits(max_wait_s=0.3),
    )
    status, text = await post(client, url)
    assert status == 200
    assert workers_in(text) == {"good"}
    assert not router.tiers["interactive"].replicas[draining.url].healthy
    good.draining = True
    status, text = await post(client, url)
    assert status == 503  # both out of rotation until a refresh finds them ready: the wait runs out
    assert json.loads(text)["error"]["code"] == "queue_timeout"
    assert "no replica of the interactive tier is ready" in json.loads(text)["error"]["message"]


async def test_the_ttft_clients_see_counts_the_router_queue(workers, make_router, client) -> None:
    """Arrival at the router to the first byte sent on, per tier: the second request's wait for the only replica is
    in its TTFT (the worker would report 0.3 s for both). The router's own share excludes wait and replica time."""
    worker = await workers("w0", first_delay_s=0.3)
    router, url = await make_router({"interactive": [worker.url]}, policy=ONE_AT_A_TIME)
    first = asyncio.create_task(post(client, url))
    while not worker.received:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(post(client, url))
    assert [(await first)[0], (await second)[0]] == [200, 200]
    assert (await post(client, url, {**BODY, "stream": False}))[0] == 200  # no first token: not counted
    status, _ = await post(client, url, {"prompt": "hi", "stream": True})  # the worker's 400: no token either
    assert status == 400

    def sample(name: str, suffix: str, **labels: str) -> float | None:
        return router.metrics.registry.get_sample_value(f"{name}_{suffix}", {"tier": "interactive", **labels})

    ttft = "goodput:router_time_to_first_token_seconds"
    assert sample(ttft, "count") == 2
    total = sample(ttft, "sum")
    assert total is not None and 0.3 + 0.5 <= total < 0.3 + 0.6 + 0.3, total
    for le, count in (("0.25", 0), ("0.5", 1), ("0.75", 2)):  # the workers' TTFT buckets: 0.3 s, then ~0.6 s
        assert sample(ttft, "bucket", le=le) == count
    added = "goodput:router_added_latency_seconds"
    assert sample(added, "count") == 4  # every answer that streamed a first byte, the 400 too
    added_total = sample(added, "sum")
    assert added_total is not None and added_total < 0.1, added_total


async def test_the_waits_of_the_requests_it_holds_are_shown_while_they_wait(
    workers, make_router, client
) -> None:
    """A queued request is in no wait or TTFT histogram until a replica takes it: the queue-age gauge histogram
    shows how long each held request has waited so far, streamed or not, and not the one the replica has."""
    worker = await workers("w0", first_delay_s=0.6)
    router, url = await make_router({"interactive": [worker.url]}, policy=ONE_AT_A_TIME)
    age = "goodput:router_queue_age_seconds"

    def sample(suffix: str, **labels: str) -> float | None:
        return router.metrics.registry.get_sample_value(f"{age}_{suffix}", {"tier": "interactive", **labels})

    assert sample("gcount") == 0  # exported before the first request
    first = asyncio.create_task(post(client, url))
    while not worker.received:
        await asyncio.sleep(0.01)
    held = [asyncio.create_task(post(client, url, body)) for body in (BODY, {**BODY, "stream": False})]
    while router.tiers["interactive"].queued < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert sample("gcount") == 2, "the two queued, not the one at the replica"
    assert sample("bucket", le="0.25") == 0 and sample("bucket", le="+Inf") == 2
    assert 0.6 <= (sample("gsum") or 0.0) < 2.0
    assert [(await task)[0] for task in (first, *held)] == [200, 200, 200]
    assert sample("gcount") == 0 and sample("gsum") == 0


async def test_a_cookie_a_replica_sets_for_one_client_never_goes_out_with_another_s(
    workers, make_router, client
) -> None:
    worker = await workers("w0", set_cookie="session=tenant-a; Path=/")
    by_name = worker.url.replace("127.0.0.1", "localhost")  # a jar keeps no cookie of an IP address's
    _, url = await make_router({"interactive": [by_name]})
    for tenant in ("a", "b"):
        assert (await post(client, url, BODY, **{"X-Goodput-Tenant": tenant}))[0] == 200
    assert [h.get("Cookie") for h in worker.headers] == [None, None]


async def test_a_request_whose_replica_fails_keeps_its_age_and_its_wait_bound_from_arrival(
    workers, make_router, client
) -> None:
    """Held behind a slow request, then sent to a replica that answers 503 (draining): back in the queue, its
    age and its bounded wait count from when it reached the router, not from when it rejoined."""
    worker = await workers("w0", first_delay_s=0.5)
    router, url = await make_router(
        {"interactive": [worker.url]}, policy=ONE_AT_A_TIME, limits=QueueLimits(max_wait_s=1.0)
    )
    tier = router.tiers["interactive"]
    first = asyncio.create_task(post(client, url))
    while not worker.received:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    held = asyncio.create_task(post(client, url))
    while tier.queued < 1:
        await asyncio.sleep(0.01)
    worker.draining = True  # the held request will be refused and rejoin the queue, with no replica left
    assert (await first)[0] == 200
    while tier.queued < 1 or tier.in_rotation():
        await asyncio.sleep(0.01)
    age = router.metrics.registry.get_sample_value(
        "goodput:router_queue_age_seconds_gsum", {"tier": "interactive"}
    )
    assert age is not None and age >= time.monotonic() - started - 0.05, age
    status, text = await held
    assert status == 503 and json.loads(text)["error"]["code"] == "queue_timeout"
    assert time.monotonic() - started < 1.4  # one second from arrival, not a fresh second after rejoining
