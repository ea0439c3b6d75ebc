"""`/v1/models/{id}`, vLLM's /tokenize and /detokenize (issue 17, item 7), and 400s in the client's terms
that name the parameter (item 8)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.server import ServeOptions, WorkerState, serve_in_thread

MODEL = "random:tiny"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, WorkerState]]:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=256, max_num_seqs=4)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as running:
        yield running


def test_models_retrieve(server: tuple[str, WorkerState]) -> None:
    client = openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)
    card = client.models.retrieve(MODEL)
    assert (card.id, card.object) == (MODEL, "model")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4")
    error = missing.value.response.json()["error"]
    assert error["code"] == "model_not_found" and "gpt-4" in error["message"]


def test_tokenize_and_detokenize(server: tuple[str, WorkerState]) -> None:
    url = server[0]
    tokens = httpx.post(url + "/tokenize", json={"prompt": "héllo"}).json()
    assert tokens["tokens"] == list("héllo".encode()) and tokens["count"] == 6
    assert tokens["max_model_len"] == 256
    chat = httpx.post(url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["count"] > 2
    text = httpx.post(url + "/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert text == {"prompt": "héllo"}
    bad = httpx.post(url + "/detokenize", json={"tokens": [10**6]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


CLEAR_400S = {
    "empty prompt": ("/v1/completions", {"prompt": ""}, "prompt", "the prompt is empty"),
    "two prompts": (
        "/v1/completions",
        {"prompt": ["a", "b"]},
        "prompt",
        "a list of 2 prompts is not supported",
    ),
    "two token prompts": ("/v1/completions", {"prompt": [[1], [2]]}, "prompt", "a list of 2 prompts"),
    "image part": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages",
        "content parts of type 'image_url' are not supported",
    ),
    "empty body": ("/v1/completions", "", "prompt", "the request body is missing"),
    "empty chat body": ("/v1/chat/completions", "", "messages", "the request body is missing"),
    "missing field": ("/v1/completions", {"max_tokens": 3}, "prompt", "prompt is required"),
    "unknown field": (
        "/v1/completions",
        {"prompt": "x", "suffix": "y"},
        "suffix",
        "suffix is not a parameter",
    ),
    "nested path": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": 5}]},
        "messages",
        "messages[0].content",
    ),
}


@pytest.mark.parametrize("case", CLEAR_400S, ids=list(CLEAR_400S))
def test_400s_speak_the_clients_terms(
    server: tuple[str, WorkerState], case: str, record_property: Callable[[str, object], None]
) -> None:
    path, body, param, says = CLEAR_400S[case]
    if isinstance(body, str):
        response = httpx.post(server[0] + path, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(server[0] + path, json=body)
    error = response.json().get("error", {})
    record_property(
        "worker_bad_input", {"case": case, "status": response.status_code, "param": error.get("param")}
    )
    assert response.status_code == 400, response.text
    assert error["param"] == param
    assert says in error["message"]
    assert "constrained-str" not in error["message"] and "list[" not in error["message"]
