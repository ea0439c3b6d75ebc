"""The worker's OpenAI-compatible API against a real uvicorn server on loopback, driven by the official client."""

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.server import ServeOptions, WorkerState, serve_in_thread

MODEL = "random:tiny"
MAX_MODEL_LEN = 2048


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, WorkerState]]:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=MAX_MODEL_LEN, max_num_seqs=8, seed=0)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: tuple[str, WorkerState]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def wait_until_idle(state: WorkerState, timeout_s: float = 10.0) -> None:
    assert state.runner is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = state.runner.engine.stats()
        if (
            stats.num_running == 0
            and stats.num_waiting == 0
            and stats.num_free_blocks == stats.num_total_blocks
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"engine not idle: {state.runner.engine.stats()}")


def test_completions_streaming_and_not_agree(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=12, temperature=0)
    choice = whole.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None
    assert whole.usage.prompt_tokens > 0
    assert 0 < whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="Hello there",
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text  # greedy: streaming changes delivery, not tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_chat_streaming_and_not_agree(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    message = whole.choices[0].message
    assert message.role == "assistant"
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 10

    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_parameters_are_honoured(client: openai.OpenAI) -> None:
    seeded = [
        client.completions.create(
            model=MODEL,
            prompt="abc",
            max_tokens=8,
            temperature=1.0,
            top_p=0.9,
            seed=7,
            extra_body={"top_k": 20},
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    ignore_eos = client.completions.create(
        model=MODEL, prompt="abc", max_tokens=20, temperature=0, extra_body={"ignore_eos": True}
    )
    assert ignore_eos.usage is not None and ignore_eos.usage.completion_tokens == 20
    assert ignore_eos.choices[0].finish_reason == "length"


def test_priority_from_header_or_field(server: tuple[str, WorkerState]) -> None:
    url = server[0] + "/v1/completions"
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    assert httpx.post(url, json=body, headers={"x-goodput-priority": "batch"}).status_code == 200
    assert httpx.post(url, json=body | {"priority": "interactive"}).status_code == 200
    assert httpx.post(url, json=body | {"priority": "urgent"}).status_code == 400
    assert httpx.post(url, json=body | {"service_tier": "flex"}).status_code == 200  # as the router reads it
    refused = httpx.post(url, json=body | {"service_tier": "turbo"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "service_tier"


def test_token_id_prompts(server: tuple[str, WorkerState], client: openai.OpenAI) -> None:
    text = client.completions.create(model=MODEL, prompt=[72, 105], max_tokens=4, temperature=0)
    assert text.usage is not None and text.usage.prompt_tokens == 2


def test_models_health_ready(server: tuple[str, WorkerState], client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(server[0] + "/health").status_code == 200
    assert httpx.get(server[0] + "/ready").json() == {"status": "ready"}


BAD_REQUESTS = {
    "malformed json": ("/v1/completions", '{"model": "random:tiny", "prompt": ', None),
    "not an object": ("/v1/completions", "[1, 2, 3]", None),
    "missing prompt": ("/v1/completions", {"model": MODEL}, "prompt"),
    "wrong type": ("/v1/completions", {"prompt": "hi", "max_tokens": "many"}, "max_tokens"),
    "negative temperature": ("/v1/completions", {"prompt": "hi", "temperature": -1}, "temperature"),
    "top_p zero": ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
    "n zero": ("/v1/completions", {"prompt": "hi", "n": 0}, "n"),
    "max_tokens zero": ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    "over-long prompt": ("/v1/completions", {"prompt": "x" * (MAX_MODEL_LEN + 10)}, "prompt"),
    "prompt plus output too long": (
        "/v1/completions",
        {"prompt": "hi", "max_tokens": MAX_MODEL_LEN},
        "max_tokens",
    ),
    "empty prompt": ("/v1/completions", {"prompt": ""}, "prompt"),
    "token id out of vocabulary": ("/v1/completions", {"prompt": [1, 10**9]}, "prompt"),
    "two prompts": ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    "seed out of range": ("/v1/completions", {"prompt": "hi", "seed": 2**70}, "seed"),
    "empty stop string": ("/v1/completions", {"prompt": "hi", "stop": [""]}, "stop"),
    "no messages": ("/v1/chat/completions", {"messages": []}, "messages"),
    "bad role": (
        "/v1/chat/completions",
        {"messages": [{"role": "robot", "content": "x"}]},
        "messages",
    ),
    "chat too long": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "y" * MAX_MODEL_LEN}]},
        "messages",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_openai_style_400(server: tuple[str, WorkerState], case: str) -> None:
    path, body, param = BAD_REQUESTS[case]
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(server[0] + path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    # The server keeps serving.
    ok = httpx.post(server[0] + "/v1/completions", json={"prompt": "still up?", "max_tokens": 2})
    assert ok.status_code == 200


def test_unknown_model_is_404(server: tuple[str, WorkerState]) -> None:
    response = httpx.post(server[0] + "/v1/completions", json={"model": "gpt-4", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def aborted(state: WorkerState) -> float:
    labels = {"model_name": MODEL, "finished_reason": "abort"}
    return state.metrics.registry.get_sample_value("vllm:request_success_total", labels) or 0.0


def test_client_disconnect_aborts_and_frees_kv(server: tuple[str, WorkerState]) -> None:
    url, state = server
    long_generation = {"prompt": "a long story", "max_tokens": MAX_MODEL_LEN - 100, "ignore_eos": True}
    before = aborted(state)
    with httpx.stream("POST", url + "/v1/completions", json=long_generation | {"stream": True}) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert json.loads(first[5:])["choices"][0]["text"] is not None
    wait_until_idle(state)
    assert aborted(state) == before + 1

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=long_generation, timeout=0.3)
    wait_until_idle(state)
    assert aborted(state) == before + 2
    assert state.runner is not None and state.runner.num_in_flight == 0


def test_openapi_describes_the_api(server: tuple[str, WorkerState]) -> None:
    doc = httpx.get(server[0] + "/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/ready", "/metrics"):
        assert path in doc["paths"], path
    completions = doc["paths"]["/v1/completions"]["post"]
    assert "422" not in completions["responses"]
    assert {"200", "400", "429", "503"} <= set(completions["responses"])
    assert "text/event-stream" in completions["responses"]["200"]["content"]
    request_schema = doc["components"]["schemas"]["CompletionRequest"]
    assert request_schema["properties"]["model"]["anyOf"][0]["enum"] == [MODEL]
    assert "prompt" in request_schema["required"]


def test_logprobs(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="log", max_tokens=5, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and completion.usage is not None
    assert (
        len(logprobs.tokens or []) == len(logprobs.token_logprobs or []) == completion.usage.completion_tokens
    )
    tokens, offsets = logprobs.tokens or [], logprobs.text_offset or []
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    for chosen, top in zip(logprobs.token_logprobs or [], logprobs.top_logprobs or [], strict=True):
        assert 1 <= len(top) <= 2
        assert chosen <= 0 and chosen >= max(top.values()) - 1e-4  # greedy picks the most likely token

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content if chat.choices[0].logprobs else None
    assert content is not None and chat.usage is not None and len(content) == chat.usage.completion_tokens
    assert all(len(entry.top_logprobs) == 2 for entry in content)


def test_usage_reports_prefix_cache_hits(client: openai.OpenAI) -> None:
    shared = "A long shared system prompt that fills several KV blocks. " * 3
    first = client.completions.create(model=MODEL, prompt=shared + "one", max_tokens=2)
    second = client.completions.create(model=MODEL, prompt=shared + "two", max_tokens=2)
    assert first.usage is not None and second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert 0 < cached <= len(shared.encode())


def test_oversized_bodies_are_refused(server: tuple[str, WorkerState]) -> None:
    url = server[0] + "/v1/completions"
    huge = json.dumps({"prompt": "z" * (40 * MAX_MODEL_LEN + 70000)}).encode()
    declared = httpx.post(url, content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(
        url, content=iter([huge[:65536], huge[65536:]]), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 400
    assert httpx.post(url, json={"prompt": "fine", "max_tokens": 2}).status_code == 200
