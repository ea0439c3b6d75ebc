"""What the router reads of a request body and of a worker's /metrics."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goodput.router.__main__ import build
from goodput.router.config import DEFAULT_MAX_PREFILL, DEFAULT_MAX_REQUESTS, parse_args, parse_quotas
from goodput.router.endpoints import ready_urls
from goodput.router.errors import RouterError
from goodput.router.refresh import parse_gauges
from goodput.router.requests import parse


def routed(body: dict, header: str | None = None, chat: bool = False, block_tokens: int = 4):
    return parse(json.dumps(body).encode(), header, "interactive", block_tokens, chat)


def test_blocks_are_chained_over_full_blocks_only() -> None:
    a = routed({"prompt": "x" * 16 * 3 + "tail"})  # 16 characters a block of 4 tokens
    b = routed({"prompt": "x" * 16 * 2 + "y" * 16})
    assert len(a.blocks) == 3
    assert a.blocks[:2] == b.blocks[:2]
    assert a.blocks[2] != b.blocks[2]
    # equal content at a different position is a different block: ids carry their whole prefix
    assert routed({"prompt": "y" * 16}).blocks[0] != b.blocks[2]
    assert a.prompt_tokens == (16 * 3 + 4) // 4


def test_token_id_prompts_are_measured_exactly() -> None:
    r = routed({"prompt": list(range(10))})
    assert r.prompt_tokens == 10
    assert len(r.blocks) == 2
    assert routed({"prompt": [*range(8), 99]}).blocks == r.blocks


def test_chat_turns_share_their_history_blocks() -> None:
    history = [{"role": "user", "content": "q" * 40}, {"role": "assistant", "content": "a" * 40}]
    one = routed({"messages": history}, chat=True)
    two = routed({"messages": [*history, {"role": "user", "content": "more"}]}, chat=True)
    assert two.blocks[: len(one.blocks)] == one.blocks
    parts = routed(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "q" * 40}]}]}, chat=True
    )
    assert parts.blocks[:2] == one.blocks[:2]


def test_max_tokens_and_class() -> None:
    assert routed({"prompt": "x", "max_tokens": 7}).max_tokens == 7
    chat = routed({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 9}, chat=True)
    assert chat.max_tokens == 9
    assert routed({"prompt": "x", "service_tier": "flex"}).request_class == "batch"
    assert routed({"prompt": "x"}, header="batch").request_class == "batch"
    assert routed({"prompt": "x"}).request_class == "interactive"


@pytest.mark.parametrize(
    "body", [{"prompt": []}, {"prompt": [1, "a"]}, {"prompt": True}, {"prompt": None}, {"prompt": [2**40]}]
)
def test_bad_prompts(body: dict) -> None:
    with pytest.raises(RouterError) as error:
        routed(body)
    assert (error.value.status, error.value.param) == (400, "prompt")


def test_parse_gauges_sums_label_sets_and_names_what_is_missing() -> None:
    text = (
        "# HELP vllm:num_requests_running x\n"
        'vllm:num_requests_running{model_name="a"} 2.0\n'
        'vllm:num_requests_running{model_name="b"} 1.0\n'
        "vllm:num_requests_waiting 4\n"
        'vllm:num_requests_waiting_by_reason{reason="x"} 100\n'
        'vllm:kv_cache_usage_perc{model_name="a",x="}"} 0.25\n'
    )
    gauges = parse_gauges(text)
    assert (gauges.running, gauges.waiting, gauges.kv_usage) == (3, 4, 0.25)
    with pytest.raises(ValueError, match="malformed"):
        parse_gauges("vllm:num_requests_running{a=1}\n")
    with pytest.raises(ValueError, match="malformed"):
        parse_gauges("vllm:num_requests_running\n")
    with pytest.raises(ValueError, match="vllm:kv_cache_usage_perc"):
        parse_gauges('vllm:num_requests_running{model_name="a"} 2.0\nvllm:num_requests_waiting 0\n')


def test_ready_urls_from_endpoint_slices() -> None:
    slices = [
        {
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "terminating": True}},
                {"addresses": ["10.0.0.4"]},
            ],
        },
        {"ports": [{"name": "http", "port": 8000}], "endpoints": [{"addresses": ["fd00::5"]}]},
        {"ports": [{"name": "metrics", "port": 9000}], "endpoints": [{"addresses": ["10.0.0.9"]}]},
        {"ports": None, "endpoints": None},
    ]
    assert ready_urls(slices) == ["http://10.0.0.2:8000", "http://10.0.0.4:8000", "http://[fd00::5]:8000"]


def test_command_line_and_quota_errors_name_the_field(tmp_path) -> None:
    config = parse_args(
        [
            "--upstream",
            "interactive=http://a:1/",
            "--quotas-json",
            '{"tenants": {"t": {"maxConcurrentRequests": 2}}}',
        ]
    )
    assert config.static == {"interactive": ["http://a:1"]}
    assert config.quotas.tenants["t"].max_concurrent == 2
    for bad, field in (
        ('{"tenants": {"t": {"tokensPerSecond": -1}}}', "quotas.tenants.t: tokensPerSecond"),
        ('{"default": {"maxConcurent": 2}}', "quotas.default"),
        ('{"defaults": {}}', "quotas"),
    ):
        with pytest.raises(ValueError, match=field):
            parse_quotas(json.loads(bad))
    with pytest.raises(SystemExit):
        parse_args(["--upstream", "fast=http://a:1"])
    with pytest.raises(SystemExit):
        parse_args(["--namespace", "ns"])  # a namespace without Services to watch


@pytest.mark.parametrize(
    ("flag", "field", "default"),
    [
        ("--max-requests-per-replica", "max_requests", DEFAULT_MAX_REQUESTS),
        ("--max-prefill-tokens-per-replica", "max_prefill_tokens", DEFAULT_MAX_PREFILL),
    ],
)
def test_a_replica_bound_for_every_tier_and_per_tier(flag: str, field: str, default: int) -> None:
    args = ["--upstream", "interactive=http://a:1", "--upstream", "batch=http://b:1"]
    config = parse_args([*args, flag, "32", flag, "batch=128"])
    assert (getattr(config.policy, field), getattr(config, field)) == (32, {"batch": 128})
    router = build(config)
    assert getattr(router.tiers["interactive"].policy, field) == 32
    assert getattr(router.tiers["batch"].policy, field) == 128
    assert router.tiers["batch"].policy.kind == config.policy.kind
    assert getattr(build(parse_args(args)).tiers["batch"].policy, field) == default
    for bad in ("0", "many", "batch=-1", "fast=3"):
        with pytest.raises(SystemExit):
            parse_args([*args, flag, bad])
    with pytest.raises(SystemExit):  # a bound for a tier the router does not have
        parse_args(["--upstream", "interactive=http://a:1", flag, "batch=8"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("model", "prompt", "messages", "max_tokens", "max_completion_tokens", "service_tier", "stream")


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), chat=st.booleans())
def test_any_json_body_parses_or_is_a_400(body: dict, chat: bool) -> None:
    """Whatever a client sends, the router answers a routed request or a 400 naming the problem: never a 5xx."""
    try:
        parsed = parse(json.dumps(body).encode(), None, "interactive", 4, chat)
    except RouterError as error:
        assert error.status == 400
    else:
        assert parsed.prompt_tokens >= 0
        assert parsed.max_tokens is None or parsed.max_tokens >= 1
