"""SIGTERM drains the real process: not ready, 503 to new requests, the in-flight stream completes, exit 0."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker exited before it was ready"
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the worker did not become ready")


def test_sigterm_drains_in_flight_then_exits_zero() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"OMP_NUM_THREADS": "1", "GOODPUT_MAX_MODEL_LEN": "2048"}
    command = [sys.executable, "-m", "goodput.worker_image", "--model", "random:tiny", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--drain-timeout-s", "60"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, process)
        first_chunk = threading.Event()
        chunks: list[dict] = []
        done: list[str] = []

        def stream() -> None:
            body = {"prompt": "drain me", "max_tokens": 500, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        done.append(line)
                    elif line.startswith("data: "):
                        chunks.append(json.loads(line[6:]))
                        first_chunk.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_chunk.wait(60)
        process.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 10
        while httpx.get(url + "/ready").status_code != 503:
            assert time.monotonic() < deadline, "/ready stayed 200 after SIGTERM"
            time.sleep(0.01)
        refused = httpx.post(url + "/v1/completions", json={"prompt": "late", "max_tokens": 2})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "draining"
        assert not done, "the stream finished before the drain could be observed; make it longer"

        reader.join(timeout=120)
        assert done == ["data: [DONE]"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_drain_timeout_ends_streams_with_an_error_event_and_exits_zero() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "goodput.worker_image", "--model", "random:tiny", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--drain-timeout-s", "0.2", "--max-model-len", "4096"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, process)
        body = {"prompt": "too long to finish", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        events: list[str] = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    if not events:
                        process.send_signal(signal.SIGTERM)
                    events.append(line[6:])
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "shutdown"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
