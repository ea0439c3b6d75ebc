"""An engine failure is a server error: in-flight requests get a clean error, /health turns 503."""

import json

import httpx

from worker_image.config import EngineConfig
from worker_image.engine import RequestOutput
from worker_image.server import ServeOptions, serve_in_thread


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
