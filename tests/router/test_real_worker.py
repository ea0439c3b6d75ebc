"""`python -m goodput.router` as a process in front of the real worker (random:tiny): the official client streams
through it, and both the router's and the worker's /metrics answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.server import ServeOptions, serve_in_thread

MODEL = "random:tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def router_url() -> Iterator[str]:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=1024, max_num_seqs=4, seed=0)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0, api_key="k")) as (worker, _):
        port = free_port()
        args = ["--host", "127.0.0.1", "--port", str(port), "--upstream", f"interactive={worker}"]
        args += ["--refresh-s", "0.2", "--max-requests-per-replica", "4"]
        process = subprocess.Popen(
            [sys.executable, "-m", "goodput.router", *args], env={**os.environ, "GOODPUT_API_KEY": "k"}
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "the router did not start"
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_streams_the_real_worker_through(router_url: str) -> None:
    client = openai.OpenAI(base_url=router_url + "/v1", api_key="k", max_retries=0, timeout=60)
    chunks = list(
        client.completions.create(model=MODEL, prompt="Hello there", max_tokens=8, temperature=0, stream=True)
    )
    whole = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=8, temperature=0)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, service_tier="flex"
    )
    assert chat.choices[0].message.content is not None
    assert [m.id for m in client.models.list()] == [MODEL]


def test_errors_match_the_workers(router_url: str) -> None:
    client = openai.OpenAI(base_url=router_url + "/v1", api_key="k", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=4, temperature=-1)
    assert bad.value.body["param"] == "temperature"  # the worker's own 400, passed through
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router_url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_metrics_after_a_refresh(router_url: str) -> None:
    time.sleep(0.5)
    text = httpx.get(router_url + "/metrics").text
    assert 'goodput:router_replicas{state="up",tier="interactive"} 1.0' in text
    assert "goodput:router_queue_wait_seconds_bucket" in text
