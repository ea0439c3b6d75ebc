"""Overload and access control: a full queue answers 429 with Retry-After; an API key guards /v1 only."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.server import ServeOptions, serve_in_thread

MODEL = "random:tiny"


def test_full_queue_gets_429_and_admitted_requests_finish() -> None:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=256, max_num_seqs=1, max_waiting=1)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as (url, state):
        body = {"prompt": "overload", "max_tokens": 64, "ignore_eos": True}

        def post(_: int) -> httpx.Response:
            return httpx.post(url + "/v1/completions", json=body, timeout=60)

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(post, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 429}, codes
        for response in responses:
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                error = response.json()["error"]
                assert error["code"] == "queue_full" and error["message"]
            else:
                assert response.json()["usage"]["completion_tokens"] == 64
        assert post(0).status_code == 200  # overload passed, the server serves again
        assert state.runner is not None and state.runner.num_in_flight == 0


@pytest.fixture(scope="module")
def guarded_url() -> str:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=128)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0, api_key="s3cret")) as (url, _):
        yield url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}])
def test_api_key_required_on_v1(guarded_url: str, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
    ):
        response = httpx.request(method, guarded_url + path, json={"prompt": "hi"}, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"


def test_api_key_accepted_and_probes_stay_open(guarded_url: str) -> None:
    client = openai.OpenAI(base_url=guarded_url + "/v1", api_key="s3cret", max_retries=0)
    completion = client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(guarded_url + path).status_code == 200, path
    doc = httpx.get(guarded_url + "/openapi.json").json()
    assert "401" in doc["paths"]["/v1/completions"]["post"]["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
