"""After a small concurrent load run, /metrics accounts for every request and agrees with the clients' clocks."""

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

MODEL = "random:tiny"
NUM_REQUESTS = 16
TRANSIT_S = 0.003  # loopback HTTP in and SSE out per request, outside the server's TTFT
ARRIVAL_GAP_S = 0.025


@dataclass
class ClientResult:
    ttft_s: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


async def stream_one(port: int, prompt: str, max_tokens: int, delay_s: float) -> ClientResult:
    """A bare HTTP/1.0 client: next to nothing runs between its clock and the wire, so its TTFT is the
    server's plus the network, even with all requests in flight at once on a busy machine."""
    body = json.dumps(
        {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    await asyncio.sleep(delay_s)
    head = f"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(head.encode() + body)
    ttft = None
    received = b""
    while chunk := await reader.read(65536):
        received += chunk
        if ttft is None and b"\ndata: {" in b"\n" + received.partition(b"\r\n\r\n")[2]:
            ttft = time.monotonic() - start
    writer.close()
    status, _, events = received.partition(b"\r\n\r\n")
    assert b" 200 " in status.split(b"\r\n")[0], status
    chunks = [json.loads(line[6:]) for line in events.decode().splitlines() if line.startswith("data: {")]
    finish = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    usage = chunks[-1]["usage"]
    assert ttft is not None and len(finish) == 1 and usage is not None
    return ClientResult(ttft, usage["prompt_tokens"], usage["completion_tokens"], finish[0])


async def load(port: int, work: list[tuple[str, int]]) -> list[ClientResult]:
    """Arrivals every ARRIVAL_GAP_S: faster than the server drains them, so requests queue in the engine."""
    return await asyncio.gather(
        *(
            stream_one(port, prompt, max_tokens, i * ARRIVAL_GAP_S)
            for i, (prompt, max_tokens) in enumerate(work)
        )
    )


def scrape(url: str) -> dict[str, float]:
    """Samples summed over labels other than finished_reason, keyed by name (and le for buckets)."""
    text = httpx.get(url + "/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["model_name"] == MODEL
            key = sample.name
            if "finished_reason" in sample.labels:
                key += "/" + sample.labels["finished_reason"]
            values[key] = values.get(key, 0.0) + sample.value
    return values


def start_worker(*flags: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The worker as in production: its own process, so the clients here do not share its interpreter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "goodput.worker_image", "--host", "127.0.0.1", "--port", str(port)]
    command += flags
    process = subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the worker did not become ready")


def test_metrics_account_for_a_load_run() -> None:
    rng = random.Random(0)
    work = [
        ("".join(rng.choices("abcdefgh ", k=rng.randint(40, 160))), rng.randint(32, 96))
        for _ in range(NUM_REQUESTS)
    ]
    url, worker = start_worker("--model", MODEL, "--max-model-len", "256", "--max-num-seqs", "2")
    try:
        results = asyncio.run(load(int(url.rsplit(":", 1)[1]), work))
        m = scrape(url)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert all(r.completion_tokens == max_tokens for r, (_, max_tokens) in zip(results, work, strict=True))
    for histogram in (
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    ):
        assert m[histogram + "_count"] == NUM_REQUESTS, histogram
    assert m["vllm:request_success_total/length"] == NUM_REQUESTS
    assert m["vllm:request_success_total/abort"] == 0
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    assert m["vllm:prompt_tokens_total"] == prompt_tokens == m["vllm:request_prompt_tokens_sum"]
    assert m["vllm:generation_tokens_total"] == completion_tokens == m["vllm:request_generation_tokens_sum"]
    gaps = completion_tokens - NUM_REQUESTS  # one inter-token gap per token after the first
    assert (
        m["vllm:inter_token_latency_seconds_count"] == gaps == m["vllm:time_per_output_token_seconds_count"]
    )
    assert m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0

    client_ttft = sum(r.ttft_s for r in results)
    server_ttft = m["vllm:time_to_first_token_seconds_sum"]
    # The client also waits for the request's way in and the first event's way out, which the server's clock
    # cannot see: milliseconds each, a share that grows when the machine is busy and TTFTs are this short.
    transit = TRANSIT_S * NUM_REQUESTS
    assert abs(server_ttft - client_ttft) <= 0.10 * client_ttft + transit, (server_ttft, client_ttft)
    # Requests queued behind max_num_seqs: queue time is part of TTFT, never more than it.
    assert 0 < m["vllm:request_queue_time_seconds_sum"] <= server_ttft
