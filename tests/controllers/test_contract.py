"""Both sides of worker_image.contract agree: what the worker exports and reads is what the operator, the
simulator, the test fakes, the rules and the dashboard use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from goodput.controllers import builders
from goodput.controllers.builders import Owner
from goodput.controllers.metrics import REGISTRY
from goodput.controllers.model_check import model_problem
from goodput.controllers.prometheus import queries
from goodput.crds.inferenceservice import ModelSpec
from goodput.policies import observe
from goodput.policies.profiles import PRESETS, WORKER_PRESETS, profile_for
from goodput.worker_image import contract
from goodput.worker_image.metrics import WorkerMetrics
from testkit.workers import SyntheticWorkers, Traffic

OBSERVABILITY = Path(__file__).resolve().parents[2] / "manifests" / "observability"
WORKER_SERIES = re.compile(r"vllm:[a-z_]+")
OPERATOR_SERIES = re.compile(r"\bgoodput_[a-z_]+")
MAX_MODEL_LEN = 4096
Families = dict[str, tuple[float, ...]]  # family and sample names → the finite `le` bounds of its buckets


def exposed(text: str) -> Families:
    out: Families = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = ()
        for sample in family.samples:
            bounds = out.setdefault(sample.name, ())
            le = sample.labels.get("le")
            if le is not None and le != "+Inf" and float(le) not in bounds:
                out[sample.name] = (*bounds, float(le))
    return out


@pytest.fixture(scope="module")
def worker() -> Families:
    return exposed(WorkerMetrics("m", max_model_len=MAX_MODEL_LEN).render()[0].decode())


def dashboards_and_rules() -> str:
    return (OBSERVABILITY / "rules.yaml").read_text() + (OBSERVABILITY / "goodput-dashboard.json").read_text()


def test_the_worker_exports_the_contract_histograms_with_its_buckets(worker: Families) -> None:
    for name, bounds in contract.LATENCY_HISTOGRAMS.items():
        assert worker[f"{name}_bucket"] == bounds, name
    for name in contract.TOKEN_HISTOGRAMS:
        assert worker[f"{name}_bucket"] == contract.token_count_buckets(MAX_MODEL_LEN)
        # a prefix of the simulator's: both count the same requests in the same bucket
        assert contract.TOKEN_COUNT_BUCKETS[: len(worker[f"{name}_bucket"])] == worker[f"{name}_bucket"]


def test_every_series_the_operator_queries_is_exported_by_the_worker(worker: Families) -> None:
    wanted = set(WORKER_SERIES.findall(" ".join(queries(60).values())))
    assert {f"{contract.TTFT}_bucket", contract.total(contract.REQUEST_SUCCESS)} <= wanted
    assert wanted <= set(worker)


def test_every_worker_series_the_rules_and_dashboard_use_is_exported(worker: Families) -> None:
    wanted = set(WORKER_SERIES.findall(dashboards_and_rules()))
    assert f"{contract.INTER_TOKEN_LATENCY}_bucket" in wanted
    assert wanted <= set(worker)


def test_the_rules_interpolate_on_the_worker_s_bucket_bounds(worker: Families) -> None:
    """Each SLI's bucket weights (what the burn-rate rules count good events with) sit on the worker's bounds."""
    groups = yaml.safe_load((OBSERVABILITY / "rules.yaml").read_text())["groups"]
    records = [rule for group in groups for rule in group["rules"] if "record" in rule]
    for key, histogram in (("ttft", contract.TTFT), ("tpot", contract.INTER_TOKEN_LATENCY)):
        bounds = {
            float(rule["labels"]["le"])
            for rule in records
            if rule["record"] == f"goodput:slo_{key}_bucket_weight" and rule["labels"]["le"] != "+Inf"
        }
        assert bounds == set(worker[f"{histogram}_bucket"]), key


def test_every_operator_series_the_rules_and_dashboard_use_is_exported_by_the_operator() -> None:
    families = list(REGISTRY.collect())
    # labelled series have no samples before their first labels: their family (and counter) names count too
    exported = {s.name for f in families for s in f.samples} | {f.name for f in families}
    exported |= {contract.total(f.name) for f in families if f.type == "counter"}
    wanted = set(OPERATOR_SERIES.findall(dashboards_and_rules()))
    assert {contract.slo_target_gauge("ttft"), contract.PLAN_REPLICAS} <= wanted
    assert wanted <= exported


def test_the_router_exports_the_series_the_operator_reads() -> None:
    from goodput.router.metrics import RouterMetrics

    exported = {f.name for f in RouterMetrics().registry.collect()}
    read = " ".join(queries(60).values())
    for name in (
        contract.ROUTER_QUEUE_DEPTH,
        contract.ROUTER_IN_FLIGHT,
        contract.ROUTER_QUEUE_WAIT,
        contract.ROUTER_TTFT,
        contract.ROUTER_QUEUE_AGE,
    ):
        assert name in exported and name in read, name


def test_the_router_times_first_tokens_in_the_worker_s_buckets() -> None:
    from goodput.router.metrics import RouterMetrics

    metrics = RouterMetrics()
    metrics.ttft.labels("interactive").observe(0.2)
    bounds = {
        s.labels["le"]
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == f"{contract.ROUTER_TTFT}_bucket"
    }
    assert bounds == {str(b) for b in contract.TTFT_BUCKETS} | {"+Inf"}


def test_the_synthetic_workers_speak_the_worker_s_names_and_buckets(worker: Families) -> None:
    fake = SyntheticWorkers()
    fake.set(("ns", "svc", "interactive"), Traffic(rps=1.0))
    families = exposed(fake.render().decode())
    assert set(families) <= set(worker)
    for name in (contract.TTFT, contract.INTER_TOKEN_LATENCY):
        assert families[f"{name}_bucket"] == worker[f"{name}_bucket"]
    assert set(WORKER_SERIES.findall(" ".join(queries(60).values()))) - {
        f"{contract.TIME_PER_OUTPUT_TOKEN}_bucket",  # the fallback for older vLLM, absent when the new one is
        contract.GPU_CACHE_USAGE,
    } <= set(families)


def test_the_simulator_fills_the_worker_s_buckets() -> None:
    assert observe.TTFT_BUCKETS == contract.TTFT_BUCKETS
    assert observe.ITL_BUCKETS == contract.INTER_TOKEN_BUCKETS
    assert observe.TOKEN_BUCKETS == contract.TOKEN_COUNT_BUCKETS


def test_the_operator_accepts_exactly_the_worker_s_random_presets() -> None:
    presets = pytest.importorskip("goodput.worker_image.presets")  # torch
    assert WORKER_PRESETS == set(presets.PRESETS) == set(contract.MODEL_PRESETS) <= set(PRESETS)
    for name in set(PRESETS) - WORKER_PRESETS:  # public checkpoints' shapes: what-if planning only
        problem = model_problem(ModelSpec(name=name, source=f"{contract.RANDOM_PREFIX}{name}"))
        assert problem is not None and problem.reason == "UnknownModelPreset"
    for name in contract.MODEL_PRESETS:
        config = presets.preset_config(name)
        profile = profile_for(ModelSpec(name=name, source=f"{contract.RANDOM_PREFIX}{name}"))
        assert (profile.layers, profile.kv_heads, profile.vocab_size) == (
            config["num_hidden_layers"],
            config["num_key_value_heads"],
            config["vocab_size"],
        )
    with pytest.raises(KeyError, match="unknown model preset"):
        profile_for(ModelSpec(name="x", source=f"{contract.RANDOM_PREFIX}not-a-worker-preset"))


def test_the_worker_reads_the_flags_and_variables_the_operator_sets(
    owner: Owner, example_spec: Any, make_plan: Any
) -> None:
    """The pod's args and ConfigMap, parsed by the worker's own parser, give the plan's engine settings."""
    main = pytest.importorskip("goodput.worker_image.__main__")  # torch
    spec, plan = (
        example_spec("tiny-cpu.yaml"),
        make_plan(tiers=(("interactive", 2, 48, 4.0),), chunk_tokens=768),
    )
    children = builders.build_children(owner, spec, plan)
    env = next(c for c in children if c["kind"] == "ConfigMap")["data"]
    (container,) = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    args = [a.replace("$(POD_IP)", "10.0.0.7") for a in container["args"]]
    options = main.parse_options(main.build_parser().parse_args(args), env)
    config = main.EngineConfig.from_env_and_args(args, env)
    assert (options.host, options.served_model_name) == ("10.0.0.7", spec.model.name)
    assert (config.model, config.dtype, config.device) == (spec.model.source, spec.model.dtype, "cpu")
    assert (config.max_num_seqs, config.batch_window_ms, config.max_num_batched_tokens) == (48, 4.0, 768)
    assert config.tensor_parallel_size == plan.tensor_parallel
