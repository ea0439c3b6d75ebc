"""Manifests the API server accepts but the operator cannot serve, and workers that cannot start: each is said
clearly (a condition or an Event naming the field, the containers' own reasons), never done quietly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goodput.controllers.model_check import model_problem
from goodput.controllers.worker_health import worker_problem
from goodput.crds.inferenceservice import InferenceServiceSpec, ModelSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.autoscale import autoscale
from goodput.policies.display import exceeds, ms
from goodput.policies.types import ScalerState
from testkit.observations import steady_window

ARCHITECTURE = {
    "params": 8_030_261_248,
    "layers": 32,
    "hiddenSize": 4096,
    "heads": 32,
    "kvHeads": 8,
    "headDim": 128,
    "vocabSize": 128256,
}


@pytest.mark.parametrize(
    ("source", "field", "reason"),
    [
        ("random:nonexistent", "spec.model.source", "UnknownModelPreset"),
        (
            "random:llama-3-8b",
            "spec.model.source",
            "UnknownModelPreset",
        ),  # the planner knows it, the worker not
        ("/models/Meta-Llama-3-8B-Instruct", "spec.model.architecture", "ArchitectureRequired"),
    ],
)
def test_a_model_the_operator_cannot_plan_or_the_worker_cannot_load_names_the_field(
    source: str, field: str, reason: str
) -> None:
    problem = model_problem(ModelSpec(name="m", source=source))
    assert problem is not None
    assert (problem.field, problem.reason) == (field, reason)
    assert problem.message.startswith(f"{field}: ")
    if reason == "UnknownModelPreset":
        assert "random:tiny" in problem.message  # says what the worker does have


def test_a_preset_the_worker_lacks_is_refused_even_with_an_architecture() -> None:
    from goodput.crds.inferenceservice import Architecture

    model = ModelSpec(
        name="m", source="random:llama-3-8b", architecture=Architecture.model_validate(ARCHITECTURE)
    )
    problem = model_problem(model)
    assert problem is not None and problem.field == "spec.model.source"


def test_config_json_problems_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    problem = model_problem(ModelSpec(name="m", source=str(tmp_path)))
    assert problem is not None and problem.field == "spec.model.architecture"
    assert "num_attention_heads" in problem.message
    (tmp_path / "config.json").write_text("{not json")
    problem = model_problem(ModelSpec(name="m", source=str(tmp_path)))
    assert problem is not None and problem.field == "spec.model.source"


@pytest.mark.parametrize("source", ["random:tiny", "random:bench-small", "random:qwen2.5-0.5b"])
def test_the_worker_presets_and_a_readable_folder_pass(source: str, tmp_path: Path) -> None:
    assert model_problem(ModelSpec(name="m", source=source)) is None
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 512,
        "intermediate_size": 128,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_problem(ModelSpec(name="m", source=str(tmp_path))) is None


def _pod(
    name: str,
    waiting: dict[str, str] | None = None,
    last: dict[str, Any] | None = None,
    conditions: list[dict[str, str]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-12-06T00:00:00Z"}}
    status: dict[str, Any] = {
        "conditions": conditions or [],
        "containerStatuses": [
            {"name": "worker", "state": state, "lastState": {"terminated": last} if last else {}}
        ],
    }
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return {"metadata": meta, "status": status}


NO_DRIVER = "RuntimeError: Found no NVIDIA driver on your system."
CRASH = _pod(
    "tiny-interactive-a",
    waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=worker"},
    last={
        "reason": "Error",
        "exitCode": 1,
        "message": "".join(f'  File "x.py", line {i}, in f\n' for i in range(40))
        + f"{NO_DRIVER}\nINFO:     Application shutdown complete.\nINFO:     Finished server process [7]\n",
    },
)


def test_a_crash_looping_worker_reports_its_reason_exit_code_and_last_words() -> None:
    problem = worker_problem([CRASH])
    assert problem is not None
    assert problem.reason == "CrashLoopBackOff"
    for part in (
        "container worker",
        "CrashLoopBackOff",
        "last exit Error (exit code 1)",
        NO_DRIVER,
        "(1 pod)",
    ):
        assert part in problem.message, part


@pytest.mark.parametrize(
    ("pod", "reason", "said"),
    [
        (
            _pod(
                "a", waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x"'}
            ),
            "ImagePullBackOff",
            'Back-off pulling image "ghcr.io/x"',
        ),
        (_pod("a", last={"reason": "OOMKilled", "exitCode": 137}), "OOMKilled", "OOMKilled (exit code 137)"),
        (
            _pod(
                "a",
                waiting={"reason": "ContainerCreating"},
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                    }
                ],
            ),
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
    ],
)
def test_each_kind_of_start_failure_is_told_in_the_containers_words(
    pod: dict[str, Any], reason: str, said: str
) -> None:
    problem = worker_problem([pod])
    assert problem is not None and problem.reason == reason and said in problem.message


def test_replicas_failing_alike_are_told_once_and_starting_or_leaving_pods_are_not_problems() -> None:
    second = {**CRASH, "metadata": {"name": "tiny-interactive-b"}}
    problem = worker_problem([CRASH, second])
    assert problem is not None and problem.message.count(NO_DRIVER) == 1 and "(2 pods)" in problem.message
    starting = _pod("c", waiting={"reason": "ContainerCreating"})
    leaving = _pod("d", waiting={"reason": "CrashLoopBackOff"}, deleting=True)
    assert worker_problem([starting, leaving, _pod("e")]) is None
    long = _pod("f", last={"reason": "Error", "exitCode": 1, "message": "x" * 5000})
    assert len(worker_problem([long]).message) < 600  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.1, "0.1"), (4.4, "4.4"), (4.0, "4"), (12.345, "12.3"), (1500.0, "1500"), (0.0123, "0.0123")],
)
def test_milliseconds_keep_their_significant_digits(value: float, shown: str) -> None:
    assert ms(value) == shown


def test_a_miss_never_reads_as_equal_values() -> None:
    assert exceeds(4.4, 4.0) == "4.4 ms > 4 ms"
    assert exceeds(4.0004, 4.0) == "4.0004 ms > 4 ms"


def _tiny(example_spec: Any, **slo: float) -> InferenceServiceSpec:
    spec = example_spec("tiny-cpu.yaml")
    return spec.model_copy(update={"slo": spec.slo.model_copy(update=slo)})


def test_an_unreachable_sub_millisecond_target_is_shown_as_set(example_spec: Any) -> None:
    spec = _tiny(example_spec, tpot_p95_ms=0.1)
    result = planner.plan(spec, planner.load_from_spec(spec), SLOPolicySpec())
    assert result.unservable
    assert "> 0.1 ms even unloaded" in (result.binding_constraint or ""), result.binding_constraint


def test_an_slo_no_replica_count_can_meet_never_buys_replicas(example_spec: Any) -> None:
    """ttftP95Ms 2 on the tiny example: even an unloaded replica takes ~4 ms. A breach with a queue used to
    scale to maxReplicas (1 → 4), reactively and as the 'largest fleet we may'; now it holds and says why."""
    running = planner.plan(
        example_spec("tiny-cpu.yaml"),
        planner.load_from_spec(example_spec("tiny-cpu.yaml")),
        SLOPolicySpec(),
    ).chosen
    assert running is not None and running.replicas == 1
    spec = _tiny(example_spec, ttft_p95_ms=2.0)
    observation = steady_window(100.0, 2.0, ttft=6.0, tpot=3.0, queue=3.0, ready=1, kv=0.1)
    decision = autoscale(spec, SLOPolicySpec(), running, observation, ScalerState(), 100.0)
    assert decision.plan.replicas == 1, decision.reason
    assert decision.action == "hold"
    assert "no replica count meets the SLO" in decision.reason and "even unloaded" in decision.reason
    assert decision.slo_met is False
