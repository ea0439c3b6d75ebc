"""Structured outputs, tool calls, logit bias, penalties and n > 1 through the official `openai` client, and
400s naming the parameter for what the worker does not serve (issue 17, item 6)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.grammar import json_schema_grammar
from goodput.worker_image.sampling import SamplingParams
from goodput.worker_image.server import ServeOptions, WorkerState, serve_in_thread

MODEL = "random:tiny"
# A random-weight model picks among the grammar's tokens almost uniformly, so strings close after ~100
# tokens at temperature 1 (greedy decoding can circle forever inside one): the answers sample, seeded.
MAX_TOKENS = 1200


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, WorkerState]]:
    torch.set_num_threads(1)
    config = EngineConfig(model=MODEL, max_model_len=2048, max_num_seqs=16, seed=0)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: tuple[str, WorkerState]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, seed: int, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Answer in JSON."}],
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=seed,
        **kwargs,
    )


def test_json_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    for seed in range(3):
        answer = ask(client, seed, response_format={"type": "json_object"}).choices[0]
        assert answer.finish_reason == "stop"
        assert isinstance(json.loads(answer.message.content or ""), dict)


def _schemas() -> st.SearchStrategy[dict[str, Any]]:
    """JSON schemas whose valid documents are bounded (strings, arrays and integers have limits), so a
    random model finishes them within max_tokens."""
    leaves = st.one_of(
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.integers(-1000, 1000).flatmap(
            lambda lo: st.integers(lo, lo + 1000).map(
                lambda hi: {"type": "integer", "minimum": lo, "maximum": hi}
            )
        ),
        st.integers(0, 8).map(lambda n: {"type": "string", "maxLength": n}),
        st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=4, unique=True).map(
            lambda values: {"enum": values}
        ),
    )

    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        arrays = st.tuples(children, st.integers(0, 3)).map(
            lambda c: {"type": "array", "items": c[0], "maxItems": c[1]}
        )
        objects = st.dictionaries(
            st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, min_size=1, max_size=3
        ).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
                lambda required: {
                    "type": "object",
                    "properties": props,
                    "required": required,
                    "additionalProperties": False,
                }
            )
        )
        return arrays | objects

    return st.recursive(leaves, extend, max_leaves=6)


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(schema=_schemas(), seed=st.integers(0, 2**31))
def test_json_schema_answers_validate(client: openai.OpenAI, schema: dict[str, Any], seed: int) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    answer = ask(client, seed, response_format=response_format).choices[0]
    assert answer.finish_reason == "stop", answer.message.content
    jsonschema.validate(json.loads(answer.message.content or ""), schema)


@pytest.mark.parametrize("preset", ["bench-small", "qwen2.5-0.5b"])
def test_grammar_over_larger_random_vocabularies(preset: str) -> None:
    """The byte tokenizer's description matches the bigger presets' vocabularies (32k and 152k ids)."""
    engine = LLMEngine(EngineConfig(model=f"random:{preset}", max_model_len=256, num_kv_blocks=32))
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    params = SamplingParams(max_tokens=60, temperature=1.0, seed=3, grammar=json_schema_grammar(schema))
    (tokens,) = engine.generate([engine.tokenizer.encode("JSON please")], params)
    jsonschema.validate(json.loads(engine.tokenizer.decode(tokens)), schema)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


def _check_call(call: Any) -> None:
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    assert call.type == "function" and call.id
    jsonschema.validate(json.loads(call.function.arguments), tools[call.function.name])


def test_required_tool_choice_answers_tool_calls(client: openai.OpenAI) -> None:
    for seed in range(3):
        choice = ask(client, seed, tools=[WEATHER, TIME], tool_choice="required").choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None and choice.message.tool_calls
        for call in choice.message.tool_calls:
            _check_call(call)


def test_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    choice = ask(client, 1, tools=[WEATHER, TIME], tool_choice=named).choices[0]
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    _check_call(call)

    stream = ask(client, 1, tools=[WEATHER, TIME], tool_choice=named, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    streamed = [call for d in deltas for call in d.tool_calls or []]
    assert [c.function.arguments for c in streamed] == [call.function.arguments]


def test_logit_bias_and_penalties(client: openai.OpenAI) -> None:
    def complete(**kwargs: Any) -> str:
        return (
            client.completions.create(model=MODEL, prompt="abc", max_tokens=8, temperature=0, **kwargs)
            .choices[0]
            .text
        )

    biased = {"65": 10, "66": 9}  # "A" just above "B", both far above the random model's own logits
    assert complete(logit_bias=biased) == "A" * 8
    assert complete(logit_bias={"65": -100, "66": 100}) == "B" * 8
    presence = complete(logit_bias=biased, presence_penalty=2.0)
    assert presence.startswith("AB") and set(presence) == {"A", "B"}
    frequency = complete(logit_bias=biased, frequency_penalty=2.0)
    assert frequency == "ABABABAB"


def test_n_choices(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=MODEL, prompt="abc", max_tokens=6, n=2, seed=5, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].text != completion.choices[1].text
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 12)
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, n=3, seed=5
    )
    assert [c.index for c in chat.choices] == [0, 1, 2]
    streamed = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, n=3, seed=5, stream=True
    )
    texts = ["", "", ""]
    for chunk in streamed:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == [c.message.content for c in chat.choices]  # same seeds, same tokens


UNSUPPORTED = {
    "best_of above n": ({"prompt": "hi", "best_of": 3}, "best_of"),
    "continuous usage stats": (
        {"prompt": "hi", "stream": True, "stream_options": {"continuous_usage_stats": True}},
        "stream_options",
    ),
    "an unknown parameter": ({"prompt": "hi", "min_p": 0.1}, "min_p"),
    "logit bias on a word": ({"prompt": "hi", "logit_bias": {"hello": 5}}, "logit_bias"),
    "logit bias outside the vocabulary": ({"prompt": "hi", "logit_bias": {"100000": 5}}, "logit_bias"),
    "an unenforceable schema": (
        {
            "prompt": "hi",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}},
            },
        },
        "response_format",
    ),
}
UNSUPPORTED_CHAT = {
    "auto tool choice": ({"tools": [WEATHER]}, "tool_choice"),
    "a tool that is not listed": (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    "legacy functions": ({"functions": [WEATHER["function"]]}, "functions"),
}


def _assert_refused(
    url: str, body: dict[str, Any], param: str, case: str, record_property: Callable[[str, object], None]
) -> None:
    """A 400 whose error names `param`; the outcome is recorded for the bad-input report either way."""
    response = httpx.post(url, json=body)
    error = response.json().get("error", {})
    record_property(
        "worker_bad_input", {"case": case, "status": response.status_code, "param": error.get("param")}
    )
    assert response.status_code == 400, response.text
    assert error["param"] == param


@pytest.mark.parametrize("case", UNSUPPORTED, ids=list(UNSUPPORTED))
def test_unsupported_values_are_refused_naming_the_parameter(
    server: tuple[str, WorkerState], case: str, record_property: Callable[[str, object], None]
) -> None:
    body, param = UNSUPPORTED[case]
    _assert_refused(server[0] + "/v1/completions", body, param, case, record_property)


@pytest.mark.parametrize("case", UNSUPPORTED_CHAT, ids=list(UNSUPPORTED_CHAT))
def test_unsupported_chat_values_are_refused(
    server: tuple[str, WorkerState], case: str, record_property: Callable[[str, object], None]
) -> None:
    extra, param = UNSUPPORTED_CHAT[case]
    body = {"messages": [{"role": "user", "content": "hi"}]} | extra
    _assert_refused(server[0] + "/v1/chat/completions", body, param, case, record_property)


def test_the_prompt_shows_the_tools_and_earlier_calls(client: openai.OpenAI) -> None:
    """Tool definitions and an assistant's earlier tool calls reach the chat template, not just the grammar."""
    named = {"type": "function", "function": {"name": "get_time"}}
    history = [
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"zone":"UTC"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    base = dict(model=MODEL, max_tokens=60, temperature=1.0, seed=0)
    plain = client.chat.completions.create(messages=history[:1], **base)
    with_tools = client.chat.completions.create(messages=history[:1], tools=[TIME], tool_choice=named, **base)
    with_history = client.chat.completions.create(messages=history, tools=[TIME], tool_choice=named, **base)
    assert plain.usage and with_tools.usage and with_history.usage
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + len('"get_time"')
    assert with_history.usage.prompt_tokens > with_tools.usage.prompt_tokens + len('{"zone":"UTC"}')
