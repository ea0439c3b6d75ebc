"""Router overhead (issue 19, part c): what the router adds to time-to-first-token, and how many streamed
chunks one router core carries, with many concurrent streams against a fast fake upstream.

Three processes: a minimal SSE upstream (raw asyncio HTTP/1.1, so it costs little CPU), the router
(`python -m goodput.router`, one process: one event loop on one core at a time), and this load generator. TTFT is
measured at the client for the same load sent directly to the upstream and through the router; the difference
of the percentiles is the router's addition. Throughput is counted as SSE events delivered per CPU-second the router
process used (utime + stime from /proc), so it reads per core even on a busy, shared machine; the router's CPU
time per request (8-event answers) is reported too, the part of the added TTFT that does not depend on how busy
the machine is.
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

REPO = Path(__file__).resolve().parent.parent
DECODE_INTERVAL_MS = 20.0  # 50 tokens/s per stream: 1,000 streams offer 50,000 chunks/s
TTFT_STREAM = (8, 500.0)  # events per answer, ms apart: 1,000 open streams start ~280 requests/s


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
    ttft_s: list[float]
    events: int
    errors: int


async def _stream(session: aiohttp.ClientSession, url: str, body: bytes, load: Load) -> None:
    start = time.perf_counter()
    first = True
    try:
        async with session.post(url + "/v1/completions", data=body) as r:
            if r.status != 200:
                load.errors += 1
                await r.read()
                return
            async for data in r.content.iter_any():
                if first:
                    load.ttft_s.append(time.perf_counter() - start)
                    first = False
                load.events += data.count(b"data: ")
    except aiohttp.ClientError:
        load.errors += 1


async def drive(url: str, streams: int, seconds: float, chunks: int, interval_ms: float) -> Load:
    """`streams` concurrent clients, each sending streaming requests back to back for `seconds`."""
    body = json.dumps(
        {
            "model": "fake",
            "prompt": "hi",
            "max_tokens": chunks,
            "stream": True,
            "chunk_interval_ms": interval_ms,
        }
    ).encode()
    load = Load([], 0, 0)
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                await _stream(session, url, body, load)

        await asyncio.gather(*(client() for _ in range(streams)))
    return load


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    try:
        _wait_up(direct + "/metrics", upstream)
        _wait_up(routed + "/health", router)
        # TTFT with `streams` streams open at once, each a long, slow answer (as chat answers are), so the
        # router's per-request work, not its chunk throughput, sets the figure
        asyncio.run(drive(routed, streams, 2.0, *TTFT_STREAM))  # warm connections on both hops
        base = asyncio.run(drive(direct, streams, seconds, *TTFT_STREAM))
        cpu0 = cpu_seconds(router.pid)
        via = asyncio.run(drive(routed, streams, seconds, *TTFT_STREAM))
        cpu_per_request = (cpu_seconds(router.pid) - cpu0) / max(len(via.ttft_s), 1)
        # throughput: streams at a decode cadence (a token every `DECODE_INTERVAL_MS`), so chunks arrive one by one
        cpu0, t0 = cpu_seconds(router.pid), time.perf_counter()
        bulk = asyncio.run(drive(routed, streams, seconds, 100, DECODE_INTERVAL_MS))
        cpu, wall = cpu_seconds(router.pid) - cpu0, time.perf_counter() - t0
    finally:
        for process in (router, upstream):
            process.terminate()
            process.wait(timeout=10)
    b, v = np.array(base.ttft_s) * 1e3, np.array(via.ttft_s) * 1e3
    return {
        "streams": streams,
        "ttft_direct_p50_ms": round(float(np.percentile(b, 50)), 3),
        "ttft_direct_p99_ms": round(float(np.percentile(b, 99)), 3),
        "ttft_router_p50_ms": round(float(np.percentile(v, 50)), 3),
        "ttft_router_p99_ms": round(float(np.percentile(v, 99)), 3),
        "ttft_added_p50_ms": round(float(np.percentile(v, 50) - np.percentile(b, 50)), 3),
        "ttft_added_p99_ms": round(float(np.percentile(v, 99) - np.percentile(b, 99)), 3),
        "requests_direct": len(b),
        "requests_router": len(v),
        "router_cpu_ms_per_request": round(cpu_per_request * 1e3, 3),
        "errors": base.errors + via.errors + bulk.errors,
        "chunks_per_s_per_core": round(bulk.events / cpu) if cpu > 0 else 0,
        "chunks_per_s_wall": round(bulk.events / wall),
        "router_cpu_utilisation": round(cpu / wall, 3),
        "machine_cpus": os.cpu_count() or 0,
        "machine_load_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__" and sys.argv[1:2] == ["upstream"]:
    asyncio.run(_upstream_main(int(sys.argv[2])))
