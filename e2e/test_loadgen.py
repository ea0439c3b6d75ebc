"""The load generator on its own: schedules from the Azure trace and Poisson profiles, and what it measures
against a scripted SSE server (known delays, failures of each kind). Fast; no cluster."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from e2e import loadgen
from goodput.policies import workloads

FIRST_S, GAP_S = 0.2, 0.05


class Scripted(http.server.BaseHTTPRequestHandler):
    """Streams ``max_tokens`` chunks: the first after FIRST_S, the rest GAP_S apart; the prompt picks a failure."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = {1: "ok", 2: "busy", 3: "error", 4: "cut"}[len(body["prompt"])]
        if mode == "busy":
            payload = b'{"error": {"message": "queue full"}}'
            self.send_response(429)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.stream(body["max_tokens"], mode)
        except (BrokenPipeError, ConnectionResetError):
            return  # the load generator hung up (its deadline passed): part of what is tested

    def stream(self, n: int, mode: str) -> None:
        for i in range(n):
            time.sleep(FIRST_S if i == 0 else GAP_S)
            self.event({"choices": [{"index": 0, "text": "x"}]})
            if mode == "error" and i == 1:
                self.event({"error": {"message": "engine failed"}})
                return
            if mode == "cut" and i == 1:
                return
        self.event({"choices": [], "usage": {"completion_tokens": n}})
        self.wfile.write(b"data: [DONE]\n\n")

    def event(self, data: dict) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


@pytest.fixture
def scripted() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_measures_ttft_and_tpot_per_request(scripted: str) -> None:
    arrivals = [loadgen.Arrival(0.1 * i, prompt_tokens=1, output_tokens=5) for i in range(4)]
    run = asyncio.run(loadgen.replay(arrivals, lambda: [scripted]))
    assert run.sent == len(run.results) == 4
    for result in run.results:
        assert result.ok and result.tokens == 5 and result.backend == scripted
        assert FIRST_S <= result.ttft_s < FIRST_S + 0.3
        # The server sleeps FIRST_S + 4·GAP_S before the last token, so its arrival bounds the mean gap
        # from below; a first token delivered late shortens the gap, so GAP_S alone is no bound.
        assert result.ttft_s + 4 * result.tpot_s >= FIRST_S + 4 * GAP_S
        assert result.tpot_s < GAP_S + 0.1
        assert result.e2e_s >= result.ttft_s + 4 * result.tpot_s - 1e-6
    summary = loadgen.summary(run.results)
    assert summary["failed"] == 0 and summary["ttft_p95_s"] >= summary["ttft_p50_s"] >= FIRST_S


def test_records_each_kind_of_failure(scripted: str) -> None:
    arrivals = [loadgen.Arrival(0.0, prompt_tokens=p, output_tokens=4) for p in (2, 3, 4)]
    run = asyncio.run(loadgen.replay(arrivals, lambda: [scripted]))
    errors = sorted(r.error or "" for r in run.results)
    assert errors[0].startswith("HTTP 429")
    assert errors[1] == "stream ended without [DONE]"
    assert errors[2] == "stream error: engine failed"
    assert loadgen.summary(run.results)["failed"] == 3


def test_no_backend_is_a_failure_and_a_backend_off_the_stack_is_refused() -> None:
    run = asyncio.run(loadgen.replay([loadgen.Arrival(0.0, 1, 1)], lambda: []))
    assert [r.error for r in run.results] == ["no backend"]
    for backend in ("10.0.0.1:8000", "198.20.0.1:8000", "192.168.1.2:8000"):
        with pytest.raises(ValueError, match="stays local"):
            asyncio.run(loadgen.replay([loadgen.Arrival(0.0, 1, 1)], lambda b=backend: [b]))
    assert [loadgen.local(b) for b in ("127.0.0.5:8000", "198.18.3.5:8000", "198.19.3.1:80")] == [
        "127.0.0.5:8000",
        "198.18.3.5:8000",
        "198.19.3.1:80",
    ]


def test_bounds_on_count_and_time(scripted: str) -> None:
    arrivals = [loadgen.Arrival(0.0, 1, 3) for _ in range(10)]
    run = asyncio.run(loadgen.replay(arrivals, lambda: [scripted], max_requests=3))
    assert run.sent == 3
    began = time.monotonic()
    late = [loadgen.Arrival(0.0, 1, 50), loadgen.Arrival(30.0, 1, 1)]
    run = asyncio.run(loadgen.replay(late, lambda: [scripted], deadline_s=0.5))
    assert time.monotonic() - began < 3 and run.sent == 1


def test_azure_slice_compresses_scales_and_clips() -> None:
    trace = workloads.load_csv()
    start, duration = 660.0, 600.0
    in_slice = int(np.sum((trace.arrival_s >= start) & (trace.arrival_s < start + duration)))
    arrivals = loadgen.azure_slice(start, duration, compress=3.0, max_prompt=256, max_output=32)
    assert len(arrivals) == in_slice
    assert arrivals[0].at_s >= 0 and arrivals[-1].at_s < duration / 3
    assert max(a.prompt_tokens for a in arrivals) == 256 and max(a.output_tokens for a in arrivals) <= 32
    doubled = loadgen.azure_slice(start, duration, compress=3.0, scale=2.0)
    assert len(doubled) == pytest.approx(2 * in_slice, rel=0.05)


def test_poisson_and_steps_rates() -> None:
    arrivals = loadgen.steps([(2.0, 100.0), (20.0, 100.0)], seed=3)
    first = sum(a.at_s < 100 for a in arrivals)
    second = len(arrivals) - first
    assert first == pytest.approx(200, rel=0.25) and second == pytest.approx(2000, rel=0.1)
    assert all(b.at_s >= a.at_s for a, b in itertools.pairwise(arrivals))


def test_live_profile_follows_the_rate_it_is_set_to() -> None:
    run = loadgen.Run()
    profile = loadgen.LiveProfile(1.0, seed=1)
    stream = profile.arrivals(run)
    slow = [next(stream) for _ in range(50)]
    profile.set(50.0, run.now())
    fast = [next(stream) for _ in range(50)]
    gaps = np.diff([a.at_s for a in slow]).mean(), np.diff([a.at_s for a in fast[1:]]).mean()
    assert gaps[0] == pytest.approx(1.0, rel=0.4) and gaps[1] == pytest.approx(0.02, rel=0.4)
    profile.stop()
    assert list(stream) == []


def test_saturate_keeps_a_fixed_number_of_requests_open_and_counts_what_completes(scripted: str) -> None:
    concurrency, seconds, output = 3, 1.5, 3
    run = asyncio.run(
        loadgen.saturate(
            lambda: [scripted], prompt=1, output=output, concurrency=concurrency, seconds=seconds
        )
    )
    assert run.sent == len(run.results) and all(r.ok for r in run.results)
    assert max(run.sent_at) < seconds and run.in_flight == 0
    # Closed loop: never more than `concurrency` open at once, and a client's next request follows its last.
    spans = [(r.start_s, r.start_s + (r.e2e_s or 0.0)) for r in run.results]
    for start, _ in spans:
        assert sum(a <= start < b for a, b in spans) <= concurrency
    assert len(run.results) >= concurrency * 2
    # Each request takes at least the server's FIRST_S + (output - 1)·GAP_S: the rate is bounded by it.
    rate = loadgen.throughput(run.results, 0.0, seconds)
    assert 0 < rate <= concurrency / (FIRST_S + (output - 1) * GAP_S)
    assert loadgen.throughput(run.results, seconds + 60, seconds + 61) == 0
