"""Router overhead (issue 19, part c): what the router adds to time-to-first-token, and how many streamed
chunks one router core carries, with many concurrent streams against a fast fake upstream.

Three processes: a minimal SSE upstream (raw asyncio HTTP/1.1 on uvloop, so it costs little CPU), the router
(`python -m goodput.router`, one process: one event loop on one core at a time), and this load generator. Where
`os.sched_setaffinity` allows, the router is pinned to one core and the client and upstream to another, so the
load generator does not take the router's core (the JSON says which cores, and the machine's load: other work
may still share them). Two views of the added TTFT:

- the router's own (`router_added_*`): it times every first byte (arrival to first byte sent on, less its queue
  wait and the upstream's time to its first byte) into `goodput:router_added_latency_seconds`; the percentiles are
  that histogram's (Prometheus interpolation inside its buckets), the mean is exact. Time the event loop takes to
  get to a ready socket before the handler runs is not in it;
- the client's (`ttft_added_*`): the same load sent directly to the upstream and through the router, the
  difference of the percentiles. It includes everything (the extra hop, the loop's backlog), and also how busy
  the client's own core is: the two runs alternate in `ROUNDS` rounds, so a background job's drift weighs on
  both sides rather than on whichever ran during it.

Both at steady arrivals (each client starts at a random point of one answer, so the streams stay open with
requests arriving evenly, ~streams/answer per second), and in `burst`: all clients start at once and, their
answers being of one length, stay in step, so `streams` requests reach the router together once per answer
(the router's per-request CPU time, times the requests ahead, is then what the last of them wait).

Throughput is counted as SSE events delivered per CPU-second the router process used (utime + stime from /proc),
so it reads per core even on a busy, shared machine; the router's CPU time per request (8-event answers) is
reported too.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from goodput.policies.observe import Histogram
from goodput.router.metrics import ADDED_LATENCY, LOOP_LAG

REPO = Path(__file__).resolve().parent.parent
DECODE_INTERVAL_MS = 20.0  # 50 tokens/s per stream: 1,000 streams offer 50,000 chunks/s
TTFT_STREAM = (8, 500.0)  # events per answer, ms apart: 1,000 open streams start ~280 requests/s
ROUNDS = 3  # direct and routed TTFT runs alternate this many times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the fake upstream -------------------------------------------------------------------------------------


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: each POST streams `max_tokens` SSE events, `chunk_interval_ms` apart (0: at once)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            if head.startswith(b"GET"):
                text = (
                    b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
                )
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
                continue
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            interval = body.get("chunk_interval_ms", 0) / 1000
            event = b'data: {"choices":[{"index":0,"text":"x"}]}\n\n'
            chunk = b"%x\r\n%s\r\n" % (len(event), event)
            for i in range(int(body.get("max_tokens", 1))):
                if writer.is_closing():
                    return
                writer.write(chunk)
                if interval:
                    await asyncio.sleep(interval)
                elif i % 16 == 15:
                    await writer.drain()
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _upstream_main(port: int) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# --- the load generator ------------------------------------------------------------------------------------


@dataclass
class Load:
    ttft_s: list[float]  # of the timed requests
    events: int
    errors: int
    sent: int  # requests, timed or not

    def add(self, other: Load) -> None:
        self.ttft_s += other.ttft_s
        self.events += other.events
        self.errors += other.errors
        self.sent += other.sent


async def _stream(
    session: aiohttp.ClientSession, url: str, body: bytes, load: Load, timed: bool = True
) -> None:
    start = time.perf_counter()
    first = True
    load.sent += 1
    try:
        async with session.post(url + "/v1/completions", data=body) as r:
            if r.status != 200:
                load.errors += 1
                await r.read()
                return
            async for data in r.content.iter_any():
                if first and timed:
                    load.ttft_s.append(time.perf_counter() - start)
                first = False
                load.events += data.count(b"data: ")
    except aiohttp.ClientError:
        load.errors += 1


async def drive(
    url: str, streams: int, seconds: float, chunks: int, interval_ms: float, stagger_s: float = 0.0
) -> Load:
    """`streams` concurrent clients, each sending streaming requests back to back for `seconds`.

    With `stagger_s`, each client starts at a random point of that span (seeded), and only requests sent after
    it are timed: `streams` streams stay open with arrivals spread evenly. Without, all start at once, and
    answers of one length keep them in step: `streams` requests arrive together, once per answer."""
    body = json.dumps(
        {
            "model": "fake",
            "prompt": "hi",
            "max_tokens": chunks,
            "stream": True,
            "chunk_interval_ms": interval_ms,
        }
    ).encode()
    load = Load([], 0, 0, 0)
    began = time.perf_counter()
    timed_from, deadline = began + stagger_s, began + stagger_s + seconds
    starts = np.random.default_rng(0).uniform(0.0, stagger_s, streams) if stagger_s else np.zeros(streams)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client(start: float) -> None:
            await asyncio.sleep(start)
            while (now := time.perf_counter()) < deadline:
                await _stream(session, url, body, load, timed=now >= timed_from)

        await asyncio.gather(*(client(float(start)) for start in starts))
    return load


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Counts:
    """A router histogram's buckets and sum at one moment (summed over its label sets)."""

    histogram: Histogram
    total: float

    def since(self, earlier: Counts) -> Counts:
        cumulative = self.histogram.cumulative - earlier.histogram.cumulative
        return Counts(Histogram(self.histogram.upper_bounds, cumulative), self.total - earlier.total)

    def figures(self, name: str) -> dict[str, float]:
        """p50 and p99 (Prometheus interpolation in the buckets) and the exact mean, in ms."""
        h = self.histogram
        return {
            f"{name}_p50_ms": round((h.quantile(0.5) or 0.0) * 1e3, 3),
            f"{name}_p99_ms": round((h.quantile(0.99) or 0.0) * 1e3, 3),
            f"{name}_mean_ms": round(self.total / max(h.count, 1) * 1e3, 3),
        }


def router_histograms(url: str) -> dict[str, Counts]:
    """The router's added-latency and loop-lag histograms now, from its /metrics."""
    import httpx

    by_le: dict[str, dict[str, float]] = {ADDED_LATENCY: {}, LOOP_LAG: {}}
    totals = dict.fromkeys(by_le, 0.0)
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            name = sample.name.rsplit("_", 1)[0]
            if name not in by_le:
                continue
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                by_le[name][le] = by_le[name].get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                totals[name] += sample.value
    return {name: Counts(Histogram.from_le(by_le[name]), totals[name]) for name in by_le}


def ttft_phase(
    direct: str, routed: str, router_pid: int, streams: int, seconds: float, stagger_s: float
) -> dict[str, float | int]:
    """The same TTFT load direct and through the router, in alternating rounds: both views of what the router
    adds."""
    base, via, cpu = Load([], 0, 0, 0), Load([], 0, 0, 0), 0.0
    before = router_histograms(routed)
    for _ in range(ROUNDS):
        base.add(uvloop.run(drive(direct, streams, seconds / ROUNDS, *TTFT_STREAM, stagger_s=stagger_s)))
        cpu0 = cpu_seconds(router_pid)
        via.add(uvloop.run(drive(routed, streams, seconds / ROUNDS, *TTFT_STREAM, stagger_s=stagger_s)))
        cpu += cpu_seconds(router_pid) - cpu0
    after = router_histograms(routed)
    cpu_per_request = cpu / max(via.sent, 1)
    b, v = np.array(base.ttft_s) * 1e3, np.array(via.ttft_s) * 1e3
    return {
        **after[ADDED_LATENCY].since(before[ADDED_LATENCY]).figures("router_added"),
        **after[LOOP_LAG].since(before[LOOP_LAG]).figures("router_loop_lag"),
        "ttft_direct_p50_ms": round(float(np.percentile(b, 50)), 3),
        "ttft_direct_p99_ms": round(float(np.percentile(b, 99)), 3),
        "ttft_router_p50_ms": round(float(np.percentile(v, 50)), 3),
        "ttft_router_p99_ms": round(float(np.percentile(v, 99)), 3),
        "ttft_added_p50_ms": round(float(np.percentile(v, 50) - np.percentile(b, 50)), 3),
        "ttft_added_p99_ms": round(float(np.percentile(v, 99) - np.percentile(b, 99)), 3),
        "requests_direct": len(b),
        "requests_router": len(v),
        "router_cpu_ms_per_request": round(cpu_per_request * 1e3, 3),
        "errors": base.errors + via.errors,
    }


def pin(router_pid: int, upstream_pid: int) -> dict[str, list[int]] | str:
    """Router on one core, this client and the upstream on another; why not, where that is not possible."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return f"not pinned: this process may use only cores {cores}"
    os.sched_setaffinity(router_pid, {cores[0]})
    for pid in (0, upstream_pid):
        os.sched_setaffinity(pid, set(cores[1:]))
    return {"router": cores[:1], "client_and_upstream": cores[1:]}


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def measure(streams: int = 1000, seconds: float = 10.0) -> dict[str, float | int | str]:
    """Start upstream and router, run the TTFT load direct and through the router, then the throughput load."""
    up_port, router_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    upstream = subprocess.Popen([sys.executable, __file__, "upstream", str(up_port)], env=env)
    router_args = ["--port", str(router_port), "--upstream", f"interactive=http://127.0.0.1:{up_port}"]
    router_args += [
        "--policy",
        "least_load",
        "--max-requests-per-replica",
        str(10 * streams),
        "--refresh-s",
        "1",
    ]
    router = subprocess.Popen([sys.executable, "-m", "goodput.router", *router_args], env=env)
    direct, routed = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{router_port}"
    own_cores = os.sched_getaffinity(0)
    load_before = os.getloadavg()[0]
    try:
        pinned = pin(router.pid, upstream.pid)
        _wait_up(direct + "/metrics", upstream)
        _wait_up(routed + "/health", router)
        # TTFT with `streams` streams open at once, each a long, slow answer (as chat answers are), so the
        # router's per-request work, not its chunk throughput, sets the figure
        uvloop.run(drive(routed, streams, 2.0, *TTFT_STREAM))  # warm connections on both hops
        answer_s = TTFT_STREAM[0] * TTFT_STREAM[1] / 1000
        steady = ttft_phase(direct, routed, router.pid, streams, seconds, answer_s)
        burst = ttft_phase(direct, routed, router.pid, streams, seconds, 0.0)
        # throughput: streams at a decode cadence (a token every `DECODE_INTERVAL_MS`), so chunks arrive one by one
        cpu0, t0 = cpu_seconds(router.pid), time.perf_counter()
        bulk = uvloop.run(drive(routed, streams, seconds, 100, DECODE_INTERVAL_MS))
        cpu, wall = cpu_seconds(router.pid) - cpu0, time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, own_cores)
        for process in (router, upstream):
            process.terminate()
            process.wait(timeout=10)
    errors = steady.pop("errors") + burst.pop("errors") + bulk.errors
    return {
        "streams": streams,
        "arrivals": f"steady: each client starts at a random point of one answer ({answer_s:g} s), then back to back",
        **steady,
        "burst": {
            "note": f"{streams} clients in step: {streams} requests arrive at once, once per answer",
            **burst,
        },
        "errors": errors,
        "chunks_per_s_per_core": round(bulk.events / cpu) if cpu > 0 else 0,
        "chunks_per_s_wall": round(bulk.events / wall),
        "router_cpu_utilisation": round(cpu / wall, 3),
        "pinned": pinned,
        "machine_cpus": os.cpu_count() or 0,
        "machine_load_1m_before": round(load_before, 2),
        "machine_load_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__" and sys.argv[1:2] == ["upstream"]:
    uvloop.run(_upstream_main(int(sys.argv[2])))
