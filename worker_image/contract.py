"""What the worker and the operator must agree on, written once: the one module of the worker others import.

The worker exports these metrics, reads these flags and variables and builds these models; the operator
queries the same series, sets the same flags and plans the same models; the simulator fills the same
buckets; the Prometheus rules and the Grafana dashboard (manifests/observability) are generated from the
same names. A change here is one edit, and tests/test_contract.py checks that every side still agrees.

Pure standard library, so the operator, the simulator and the generators import it without torch.
"""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------- worker metrics (vLLM's names)
# Names, types and bucket boundaries follow vLLM's v1 `PrometheusStatLogger`, so vLLM workers are read too.
# Counters are declared without the `_total` suffix prometheus_client adds on the wire (as vLLM's are).

TTFT = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
TIME_PER_OUTPUT_TOKEN = "vllm:time_per_output_token_seconds"  # deprecated twin of INTER_TOKEN_LATENCY
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
REQUEST_SUCCESS = "vllm:request_success"  # counter, by finished_reason
PROMPT_TOKENS = "vllm:prompt_tokens"  # counter
GENERATION_TOKENS = "vllm:generation_tokens"  # counter
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"  # counter
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"  # counter
NUM_PREEMPTIONS = "vllm:num_preemptions"  # counter
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
GPU_CACHE_USAGE = "vllm:gpu_cache_usage_perc"  # deprecated twin of KV_CACHE_USAGE


def total(counter: str) -> str:
    """A counter's name on the wire, as PromQL must spell it."""
    return f"{counter}_total"


# Inter-token latency gets buckets below 10 ms that vLLM lacks: small models decode in 2-5 ms.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
MAX_TOKEN_BUCKET = 100_000  # token-count buckets where no max_model_len bounds them (simulator, fakes)


def token_count_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to `max_value` (100 -> 1, 2, 5, 10, 20, 50, 100): a worker's token histograms
    stop at its max_model_len, so they are a prefix of TOKEN_COUNT_BUCKETS."""
    buckets: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_value:
                return tuple(buckets)
            buckets.append(float(mantissa * scale))
        scale *= 10


TOKEN_COUNT_BUCKETS = token_count_buckets(MAX_TOKEN_BUCKET)
LATENCY_HISTOGRAMS = {
    TTFT: TTFT_BUCKETS,
    INTER_TOKEN_LATENCY: INTER_TOKEN_BUCKETS,
    TIME_PER_OUTPUT_TOKEN: INTER_TOKEN_BUCKETS,
    E2E_REQUEST_LATENCY: REQUEST_LATENCY_BUCKETS,
    REQUEST_QUEUE_TIME: REQUEST_LATENCY_BUCKETS,
}
TOKEN_HISTOGRAMS = (REQUEST_PROMPT_TOKENS, REQUEST_GENERATION_TOKENS)

# ---------------------------------------------------------------- labels

MODEL_NAME_LABEL = "model_name"  # on every worker series
FINISHED_REASON_LABEL = "finished_reason"  # on REQUEST_SUCCESS
FINISH_REASONS = ("stop", "length", "abort")
# The worker pods' labels, and the series labels the scrape configuration turns them (and the pod's namespace)
# into; the operator's queries, the rules and the dashboard all join on the series labels.
POD_LABEL_SERVICE = "goodput.dev/inferenceservice"
POD_LABEL_TIER = "goodput.dev/tier"
NAMESPACE_LABEL = "namespace"
SERVICE_LABEL = "inferenceservice"
TIER_LABEL = "tier"
# The router's pods carry this label (valued with the service they front) instead of POD_LABEL_SERVICE, so worker
# queries and the workers' PDB never count them; the scrape configuration turns it into SERVICE_LABEL too.
POD_LABEL_ROUTER = "goodput.dev/router"

# ---------------------------------------------------------------- the router's metrics (operator, dashboards)

ROUTER_QUEUE_DEPTH = "goodput:router_queue_depth"  # gauge {tier}: requests held for a replica
ROUTER_QUEUE_WAIT = "goodput:router_queue_wait_seconds"  # histogram {tier}
ROUTER_IN_FLIGHT = "goodput:router_in_flight"  # gauge {tier}: requests sent to replicas, not finished
# histogram {tier}, TTFT_BUCKETS: a streamed request's arrival at the router to its first byte sent to the client
# (the TTFT its clients see, router queue included); the autoscaler's SLO signals prefer it to the workers' TTFT
ROUTER_TTFT = "goodput:router_time_to_first_token_seconds"
# gauge histogram {tier}, TTFT_BUCKETS: at each scrape, how long each request the router holds has waited so far.
# The TTFT and queue-wait histograms count a request only once it is served, so one starving in the queue is
# invisible to them until then; the operator counts those that passed the TTFT target
ROUTER_QUEUE_AGE = "goodput:router_queue_age_seconds"

# ---------------------------------------------------------------- the operator's metrics (dashboards, rules)

OPERATOR_DECISIONS = "goodput_operator_decisions"  # counter {action, mode}
OPERATOR_RECONCILE_ERRORS = "goodput_operator_reconcile_errors"  # counter {stage}
OPERATOR_POLL_DURATION = "goodput_operator_poll_duration_seconds"  # histogram
OPERATOR_PROMETHEUS_UP = "goodput_operator_prometheus_up"
OPERATOR_SERVICES = "goodput_operator_services"
PLAN_REPLICAS = "goodput_plan_replicas"  # {namespace, inferenceservice, tier}
SLO_KEYS = ("ttft", "tpot")
PERCENTILE_LABEL = "percentile"  # "95" | "99", on the SLO target gauges


def slo_target_gauge(key: str) -> str:
    """The operator's gauge of each service's `key` target in seconds ({namespace, inferenceservice,
    percentile})."""
    if key not in SLO_KEYS:
        raise ValueError(f"SLO key must be one of {', '.join(SLO_KEYS)}, got {key!r}")
    return f"goodput_slo_{key}_target_seconds"


# ---------------------------------------------------------------- worker flags and environment variables

ENV_PREFIX = "GOODPUT_"


def env_name(setting: str) -> str:
    """The variable the worker reads a setting from (`served_model_name` -> GOODPUT_SERVED_MODEL_NAME)."""
    return ENV_PREFIX + setting.upper()


def flag(setting: str) -> str:
    """The worker's command-line flag for a setting (`max_num_seqs` -> --max-num-seqs)."""
    return "--" + setting.replace("_", "-")


# ---------------------------------------------------------------- models

# `random:<preset>`: a preset's architecture with seeded random weights. The one list of presets: the worker
# builds each from its Hugging Face style config below, the operator plans each from the same numbers and
# refuses any other `random:` source (controllers.model_check). A real checkpoint is served from its folder.
RANDOM_PREFIX = "random:"
_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5}
_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6}
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_LLAMA,
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "torch_dtype": "float32",
    },
    "bench-small": {
        **_LLAMA,
        "vocab_size": 32000,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "torch_dtype": "float32",
    },
    "qwen2.5-0.5b": {
        **_QWEN2,
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    },
}


# ---------------------------------------------------------------- the error body clients read
class OpenAIError(Exception):
    """An error in OpenAI's body with its HTTP headers: the one shape the worker and the router answer with."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
