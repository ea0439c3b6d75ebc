"""The worker's lifecycle: not ready while loading, fatal when loading fails, clean errors when the engine
fails mid-request (in-flight requests get an error, /health turns 503)."""

import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from goodput.worker_image import app as worker_app
from goodput.worker_image import server
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import RequestOutput
from goodput.worker_image.server import ServeOptions, serve_in_thread


def test_engine_failure_fails_requests_cleanly_and_health() -> None:
    config = EngineConfig(model="random:tiny", max_model_len=256)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as (url, state):
        assert state.runner is not None
        engine = state.runner.engine
        real_step = engine.step
        steps = 0

        def failing_step() -> list[RequestOutput]:
            nonlocal steps
            steps += 1
            if steps > 3:
                raise RuntimeError("simulated device fault")
            return real_step()

        engine.step = failing_step  # type: ignore[method-assign]
        body = {"prompt": "doomed", "max_tokens": 50, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "internal_error" and "simulated device fault" in error["message"]

        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/ready").status_code == 503
        refused = httpx.post(url + "/v1/completions", json={"prompt": "next", "max_tokens": 2})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "engine_failed"


def test_not_ready_while_the_model_loads_then_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = threading.Event()
    real_engine = worker_app.LLMEngine

    def slow_engine(config: EngineConfig) -> worker_app.LLMEngine:
        assert loaded.wait(30)
        return real_engine(config)

    monkeypatch.setattr(worker_app, "LLMEngine", slow_engine)
    app = server.create_app(EngineConfig(model="random:tiny", max_model_len=128), ServeOptions())
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").json() == {"status": "loading"}
        refused = client.post("/v1/completions", json={"prompt": "early"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "loading"
        loaded.set()
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post("/v1/completions", json={"prompt": "now", "max_tokens": 2}).status_code == 200


def test_a_model_that_fails_to_load_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_engine(config: EngineConfig) -> worker_app.LLMEngine:
        raise ValueError("corrupt weights")

    fatal: list[BaseException] = []
    monkeypatch.setattr(worker_app, "LLMEngine", broken_engine)
    app = server.create_app(EngineConfig(model="random:tiny"), ServeOptions(), on_fatal=fatal.append)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not fatal:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/health").status_code == 503
        assert client.get("/ready").json() == {"status": "failed"}
    assert "corrupt weights" in str(fatal[0])
