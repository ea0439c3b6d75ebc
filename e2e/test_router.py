"""The router on the real node (issue 19's e2e acceptance): one `mixed` service with an API key and its router.

`pytest -m e2e e2e/test_router.py`. The service serves `random:bench-small` (prefill is
what loads a CPU replica: a burst of 512-token prompts overloads it while the client stays light) on one
interactive and one batch replica, fixed (maxReplicas 2, and a policy that scales nothing down within the module),
in a namespace that enforces the `restricted` Pod Security Standard, with its router from the start (adding it
later is a spec change: the operator re-plans from the observed mix and may move the batch replica). The noisy
tenant's quota is on concurrent requests (the token bucket's arithmetic is tests/router/test_quota.py's). The
router pod kill comes last: it is the one test that disrupts the others' setting.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from kubernetes.client import CoreV1Api

from e2e import loadgen, procs, service
from e2e import operator as goodput
from e2e import router_stack as rs
from e2e.stack import Stack
from goodput.worker_image.contract import MODEL_PRESETS, ROUTER_TTFT

pytestmark = pytest.mark.e2e

# Replicas stay where they are for the whole module: no scale-down (so no move of a replica between the tiers)
# within 20 minutes; the tests count on one interactive and one batch replica.
POLICY = service.FastPolicy(name="e2e-router-steady", scale_down_stabilization_s=1200)
NAME = "rt"
KEY = "e2e-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
SLO = {"ttftP95Ms": 2500.0, "tpotP95Ms": 1000.0, "attainment": 0.9}
PROMPT, OUTPUT = 512, 4  # prefill-heavy requests: the replica, not the client, is the bottleneck
NOISY_CONCURRENCY = 2  # the noisy tenant's quota: requests in flight (one per router pod)
QUIET_RPS, QUIET_PROMPT = 0.5, 128
REQUESTS = "vllm:request_success_total"
ROUTER_TTFT_COUNT = f"{ROUTER_TTFT}_count"
VOCAB = MODEL_PRESETS["bench-small"]["vocab_size"]


@dataclass(frozen=True)
class Routed:
    namespace: str

    def url(self, stack: Stack) -> str:
        return rs.cluster_url(stack, self.namespace, NAME)


def body(prompt: int = 8, output: int = 4, **extra: object) -> dict[str, object]:
    return {
        "model": NAME,
        "prompt": list(range(1, prompt + 1)),
        "max_tokens": output,
        "ignore_eos": True,
        **extra,
    }


def unique_body(n: int, prompt: int, output: int) -> dict[str, object]:
    """The `n`th request of its own prompt: its first token already differs from every other's (so no prefix is
    shared, and no replica's prefix cache serves it cheaply); random ids after it, in bench-small's vocabulary."""
    rng = random.Random(n)
    return {
        "model": NAME,
        "prompt": [1 + n % (VOCAB - 1), *(rng.randrange(1, VOCAB) for _ in range(prompt - 1))],
        "max_tokens": output,
        "ignore_eos": True,
    }


@pytest.fixture(scope="module")
def routed(cluster: Stack) -> Iterator[Routed]:
    namespace = f"rt-{uuid.uuid4().hex[:6]}"
    with goodput.installed(cluster, POLICY), cluster.api_client() as client:
        core = CoreV1Api(client)
        labels = {"pod-security.kubernetes.io/enforce": "restricted"}
        core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "api-key"}, "stringData": {"key": KEY}}
        )
        manifest = service.sized_service(
            namespace, POLICY.name, SLO, name=NAME, source="random:bench-small",
            prompt_tokens=PROMPT, output_tokens=OUTPUT, expected_rps=1.0, max_replicas=2,
        )  # fmt: skip
        manifest["spec"]["traffic"]["class"] = "mixed"
        manifest["spec"]["worker"] = {"apiKeySecret": {"name": "api-key", "key": "key"}}
        noisy = {"name": "noisy", "maxConcurrentRequests": NOISY_CONCURRENCY}
        service.apply(cluster, rs.with_router(manifest, cluster, tenantQuotas=[noisy]))
        try:
            service.wait_ready(cluster, namespace, NAME, timeout=300)
            rs.wait_routed(cluster, namespace, NAME, {"interactive": 1, "batch": 1})
            yield Routed(namespace)
        finally:
            for pod in rs.routers(cluster, namespace, NAME):
                print(f"router {pod.name} log (tail):\n{cluster.pod_logs(namespace, pod.name)[-3000:]}")
            core.delete_namespace(namespace)


def test_api_key_is_checked_before_routing_and_routers_run_restricted(cluster: Stack, routed: Routed) -> None:
    url, routers = routed.url(cluster), rs.routers(cluster, routed.namespace, NAME)
    workers = rs.workers(cluster, routed.namespace, NAME, "interactive")
    rejected, served = (
        rs.total(routers, "goodput:router_rejections_total", reason="unauthorized"),
        rs.total(workers, REQUESTS),
    )
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = httpx.post(
            f"{url}/v1/completions", json=body(), headers=headers, timeout=30, trust_env=False
        )
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "invalid_api_key"
    assert rs.total(routers, "goodput:router_rejections_total", reason="unauthorized") == rejected + 2
    ok = httpx.post(f"{url}/v1/completions", json=body(), headers=AUTH, timeout=30, trust_env=False)
    assert ok.status_code == 200, ok.text
    assert rs.total(workers, REQUESTS) == served + 1  # only the keyed request reached a worker
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        router_pod = core.read_namespaced_pod(routers[0].name, routed.namespace).spec
        worker_pod = core.read_namespaced_pod(workers[0].name, routed.namespace).spec
        labels = core.read_namespace(routed.namespace).metadata.labels
    # admitted in a namespace that enforces `restricted`, with the workers' own security contexts
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert router_pod.security_context == worker_pod.security_context
    assert router_pod.containers[0].security_context == worker_pod.containers[0].security_context
    assert (
        router_pod.security_context.run_as_non_root
        and router_pod.containers[0].security_context.read_only_root_filesystem
    )


MALFORMED = [
    ("/v1/completions", b'{"model": "rt", "prompt": '),
    ("/v1/completions", b"[1, 2]"),
    ("/v1/completions", b'{"model": "rt", "prompt": "hi", "max_tokens": -1}'),
    ("/v1/completions", b'{"model": "rt", "prompt": "hi", "temperature": "hot"}'),
    ("/v1/completions", b'{"model": "rt", "prompt": {"text": "hi"}}'),
    ("/v1/completions", b'{"model": "rt", "prompt": "hi", "service_tier": "gold"}'),
    ("/v1/chat/completions", b'{"model": "rt", "messages": "hi"}'),
    ("/v1/completions", b"\xff\xfe"),
]


def test_a_malformed_request_gets_the_workers_400(cluster: Stack, routed: Routed) -> None:
    url, worker = routed.url(cluster), rs.workers(cluster, routed.namespace, NAME, "interactive")[0]
    headers = {**AUTH, "Content-Type": "application/json"}
    with httpx.Client(timeout=30, trust_env=False, headers=headers) as client:
        for path, content in MALFORMED:
            direct, routed_answer = (
                client.post(worker.url + path, content=content),
                client.post(url + path, content=content),
            )
            assert direct.status_code == routed_answer.status_code == 400, (
                content,
                direct.text,
                routed_answer.text,
            )
            mine, theirs = routed_answer.json()["error"], direct.json()["error"]
            assert (mine["type"], mine["param"]) == (theirs["type"], theirs["param"]), content


def test_the_batch_class_lands_on_the_batch_tier(cluster: Stack, routed: Routed) -> None:
    url = routed.url(cluster)
    batch = rs.workers(cluster, routed.namespace, NAME, "batch")
    interactive = rs.workers(cluster, routed.namespace, NAME, "interactive")
    before = rs.total(batch, REQUESTS), rs.total(interactive, REQUESTS)
    chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with httpx.Client(timeout=60, trust_env=False, headers=AUTH) as client:
        for _ in range(2):
            assert client.post(f"{url}/v1/completions", json=body(service_tier="flex")).status_code == 200
            answer = client.post(
                f"{url}/v1/chat/completions", json=chat, headers={"X-Goodput-Class": "batch"}
            )
            assert answer.status_code == 200, answer.text
        assert (
            client.post(f"{url}/v1/completions", json=body()).status_code == 200
        )  # the default: interactive
    # counted by the workers themselves, not the router
    assert (rs.total(batch, REQUESTS), rs.total(interactive, REQUESTS)) == (before[0] + 4, before[1] + 1)


def test_a_noisy_tenant_gets_429s_and_the_other_keeps_its_slo(cluster: Stack, routed: Routed) -> None:
    """The noisy tenant keeps 5x its concurrency quota busy (clients that wait Retry-After after a 429); the quiet
    one sends light traffic and keeps its TTFT SLO, as it would not behind ten prefill-heavy noisy requests."""
    url, routers = routed.url(cluster), rs.routers(cluster, routed.namespace, NAME)
    timed_before = rs.total(routers, ROUTER_TTFT_COUNT)
    seconds = 20.0
    quiet = loadgen.poisson(QUIET_RPS, seconds, prompt=QUIET_PROMPT, output=OUTPUT, seed=2)
    codes: list[int] = []
    numbers = itertools.count()

    async def noisy_client(client: httpx.AsyncClient, began: float) -> None:
        while time.monotonic() - began < seconds:
            request = unique_body(next(numbers), PROMPT, OUTPUT)
            answer = await client.post(f"{url}/v1/completions", json=request)
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "concurrency_quota"
                await asyncio.sleep(float(answer.headers["Retry-After"]))

    async def both() -> loadgen.Run:
        headers = {**AUTH, "X-Goodput-Tenant": "noisy"}
        async with httpx.AsyncClient(timeout=60, trust_env=False, headers=headers) as client:
            began = time.monotonic()
            noisy = [noisy_client(client, began) for _ in range(5 * NOISY_CONCURRENCY)]
            quiet_run = loadgen.replay(
                quiet, lambda: [url.removeprefix("http://")], headers={**AUTH, "X-Goodput-Tenant": "quiet"}
            )
            return (await asyncio.gather(quiet_run, *noisy))[0]

    quiet_summary = loadgen.summary(asyncio.run(both()).results)
    print(
        f"noisy: {len(codes)} requests, {codes.count(429)} got 429, {codes.count(200)} served; quiet: {quiet_summary}"
    )
    assert set(codes) == {200, 429}
    assert quiet_summary["failed"] == 0
    assert quiet_summary["ttft_p95_s"] * 1000 <= SLO["ttftP95Ms"]
    # the routers timed every streamed first token their clients saw (the quiet tenant's; the noisy one's do not
    # stream), and the operator reads that client-seen TTFT into the status (streams keep its window non-empty)
    assert rs.total(routers, ROUTER_TTFT_COUNT) - timed_before >= quiet_summary["requests"]
    quiet_headers = {**AUTH, "X-Goodput-Tenant": "quiet"}

    def client_ttft_in_status() -> bool:
        answer = httpx.post(
            f"{url}/v1/completions",
            json=body(stream=True),
            headers=quiet_headers,
            timeout=30,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        observed = service.get_service(cluster, routed.namespace, NAME)["status"]["observed"]
        return observed.get("routerTtftP95Ms") is not None

    procs.wait_until(client_ttft_in_status, 60, "the status to show the TTFT the router's clients see", 1.0)


def test_a_silent_worker_leaves_rotation_within_one_refresh(cluster: Stack, routed: Routed) -> None:
    """SIGSTOP the interactive worker: requests sent to it before the router noticed go to the batch tier,
    the one with a replica in rotation, within one refresh (1 s, and its 0.8 s timeout)."""
    url, routers = routed.url(cluster), rs.routers(cluster, routed.namespace, NAME)
    silent = rs.workers(cluster, routed.namespace, NAME, "interactive")[0]
    batch = rs.workers(cluster, routed.namespace, NAME, "batch")
    before = rs.total(batch, REQUESTS)
    pid = cluster.container_pid(silent.container_id)
    os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    try:

        async def three() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30, trust_env=False, headers=AUTH) as client:
                return await asyncio.gather(
                    *(client.post(f"{url}/v1/completions", json=body()) for _ in range(3))
                )

        answers = asyncio.run(three())
        served_s = time.monotonic() - began
        assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
        assert served_s < 2 * 1.0 + 1.0, served_s  # a refresh cycle (and a margin for the batch prefill)
        assert rs.total(batch, REQUESTS) == before + 3
        procs.wait_until(  # the router that got none of them noticed too, within its own refresh
            lambda: all(
                rs.metric(r.url, "goodput:router_replicas", tier="interactive", state="down") == 1
                for r in routers
            ),
            2.0,
            "every router to take the silent worker out of rotation",
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    rs.wait_routed(cluster, routed.namespace, NAME, {"interactive": 1, "batch": 1}, timeout=30)


def test_a_killed_router_pod_fails_only_its_own_streams(cluster: Stack, routed: Routed) -> None:
    victim, survivor = rs.routers(cluster, routed.namespace, NAME)
    stream = body(prompt=16, output=150, stream=True)

    async def run() -> tuple[list[str | None], list[str | None], list[int]]:
        started = asyncio.Event()
        first_chunks: list[str] = []

        async def one(pod: rs.Pod) -> str | None:
            """None when the stream ended with [DONE], else what broke it."""
            try:
                async with client.stream("POST", f"{pod.url}/v1/completions", json=stream) as answer:
                    if answer.status_code != 200:
                        return f"HTTP {answer.status_code}"
                    async for line in answer.aiter_lines():
                        if line.startswith("data: ") and pod.name not in first_chunks:
                            first_chunks.append(pod.name)
                            if len(first_chunks) == 2:
                                started.set()
                        if line == "data: [DONE]":
                            return None
                    return "ended without [DONE]"
            except httpx.HTTPError as error:
                return f"{type(error).__name__}: {error}"

        async with httpx.AsyncClient(timeout=60, trust_env=False, headers=AUTH) as client:
            streams = [asyncio.create_task(one(pod)) for pod in (victim, survivor, victim, survivor)]
            await asyncio.wait_for(started.wait(), 30)
            os.kill(cluster.container_pid(victim.container_id), signal.SIGKILL)
            # new requests while the victim is down: the other replica serves them
            fresh = [await client.post(f"{survivor.url}/v1/completions", json=body()) for _ in range(2)]
            ends = await asyncio.gather(*streams)
        return [ends[0], ends[2]], [ends[1], ends[3]], [a.status_code for a in fresh]

    killed, kept, fresh = asyncio.run(run())
    assert all(end is not None for end in killed), killed
    assert kept == [None, None]
    assert fresh == [200, 200]
