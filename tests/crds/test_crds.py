"""The generated CRDs: fresh, structural, and rejecting bad manifests with the field named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from goodput.crds.generate import OUTPUT_DIRS, all_crds, render
from goodput.crds.inferenceservice import InferenceService
from goodput.crds.slopolicy import SLOPolicy
from goodput.crds.validation import apply_defaults, schema_for, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("directory", OUTPUT_DIRS, ids=lambda d: d.name)
def test_generated_yaml_is_current(directory: Path) -> None:
    for name, obj in all_crds().items():
        path = directory / name
        assert path.exists(), f"{path} missing: run `python -m goodput.crds`"
        assert path.read_text() == render(obj), f"{path} is stale: run `python -m goodput.crds`"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


@pytest.mark.parametrize("name", list(all_crds()))
def test_schema_is_structural(name: str) -> None:
    crd = all_crds()[name]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    for path, node in _walk(version["schema"]["openAPIV3Schema"]):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "$defs", "title"} & node.keys(), path
        preserved = node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or preserved, f"{path} has no type"
        assert node.get("type") != "null", path


def test_printer_columns_cover_the_operators_decisions() -> None:
    crd = all_crds()["inferenceservices.goodput.dev.yaml"]
    names = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    for wanted in (
        "Tier",
        "Replicas",
        "TP",
        "Accelerator",
        "TTFT-p95-ms",
        "TPOT-p95-ms",
        "SLO-Met",
        "Status",
        "Age",
    ):
        assert wanted in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert validate_manifest(obj) == []
    InferenceService.model_validate(obj)


def _service() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifests" / "examples" / "tiny-cpu.yaml").read_text())


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    if value is _DELETE:
        obj.pop(last, None)
    else:
        obj[last] = value


_DELETE = object()

INVALID_SERVICES = [
    ("spec.scaling.minReplicas", {"spec.scaling.minReplicas": 5, "spec.scaling.maxReplicas": 2}),
    ("spec.scaling.minReplicas", {"spec.scaling.minReplicas": 0}),  # scale to zero needs a router
    ("spec.slo.attainment", {"spec.slo.attainment": 1.0}),
    ("spec.slo.attainment", {"spec.slo.attainment": 0}),
    ("spec.accelerators", {"spec.accelerators": []}),
    ("spec.accelerators", {"spec.accelerators": [{"type": "L4"}, {"type": "L4"}]}),
    ("spec.accelerators[0].type", {"spec.accelerators": [{"type": "TPU"}]}),
    ("spec.accelerators[0].pricePerHour", {"spec.accelerators": [{"type": "L4", "pricePerHour": -1}]}),
    ("spec.slo.ttftP95Ms", {"spec.slo.ttftP95Ms": _DELETE}),
    ("spec.slo.tpotP95Ms", {"spec.slo.tpotP95Ms": _DELETE}),
    ("spec.slo.ttftP95Ms", {"spec.slo.ttftP95Ms": -3}),
    ("spec.traffic.class", {"spec.traffic.class": "realtime"}),
    ("spec.traffic.batchFraction", {"spec.traffic.batchFraction": 0.5}),
    ("spec.traffic.promptTokens.p50", {"spec.traffic.promptTokens": {"p50": 900, "p95": 100}}),
    ("spec.scaling.maxTensorParallel", {"spec.scaling.maxTensorParallel": 3}),
    ("spec.mode", {"spec.mode": "yolo"}),
    ("spec.model.source", {"spec.model.source": ""}),
    ("spec.model", {"spec.model": _DELETE}),
    (
        "spec.model.architecture.kvHeads",
        {
            "spec.model.architecture": {
                "params": 1000,
                "layers": 2,
                "hiddenSize": 64,
                "heads": 4,
                "kvHeads": 3,
                "headDim": 16,
                "vocabSize": 100,
            }
        },
    ),
]


@pytest.mark.parametrize(("field", "changes"), INVALID_SERVICES, ids=[f for f, _ in INVALID_SERVICES])
def test_invalid_service_is_rejected_naming_the_field(field: str, changes: dict[str, Any]) -> None:
    obj = _service()
    for dotted, value in changes.items():
        _set(obj, dotted, copy.deepcopy(value))
    errors = validate_manifest(obj)
    assert errors, "the schema accepted an invalid manifest"
    assert any(error.field == field for error in errors), [str(e) for e in errors]
    with pytest.raises(ValidationError) as raised:
        InferenceService.model_validate(obj)
    leaf = field.split(".")[-1].split("[")[0]
    assert leaf in str(raised.value), str(raised.value)


INVALID_POLICIES = [
    ("spec.headroom", {"spec.headroom": 1.5}),
    ("spec.staleAfterSeconds", {"spec.staleAfterSeconds": 5, "spec.evaluationIntervalSeconds": 30}),
    (
        "spec.tierBatchWindows.batch.minMs",
        {"spec.tierBatchWindows": {"batch": {"minMs": 50, "maxMs": 20}}},
    ),
    ("spec.calibration.minFactor", {"spec.calibration": {"minFactor": 1.5}}),
    ("spec.missingMetrics", {"spec.missingMetrics": "panic"}),
    ("spec.scaleToZeroAfterSeconds", {"spec.scaleToZeroAfterSeconds": 0}),
    (
        "spec.scaleToZeroAfterSeconds",
        {"spec.scaleToZeroAfterSeconds": 10, "spec.evaluationIntervalSeconds": 30},
    ),
]


@pytest.mark.parametrize(("field", "changes"), INVALID_POLICIES, ids=[f for f, _ in INVALID_POLICIES])
def test_invalid_policy_is_rejected_naming_the_field(field: str, changes: dict[str, Any]) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "goodput.dev/v1alpha1",
        "kind": "SLOPolicy",
        "metadata": {"name": "p"},
    }
    for dotted, value in changes.items():
        _set(obj, dotted, copy.deepcopy(value))
    errors = validate_manifest(obj)
    assert any(error.field == field for error in errors), [str(e) for e in errors]
    with pytest.raises(ValidationError) as raised:
        SLOPolicy.model_validate(obj)
    assert field.split(".")[-1] in str(raised.value), str(raised.value)


def test_min_replicas_zero_is_accepted_with_a_router_and_its_error_names_the_field_without() -> None:
    obj = _service()
    obj["spec"]["scaling"]["minReplicas"] = 0
    errors = validate_manifest(obj)
    assert [str(e) for e in errors] == [
        "spec.scaling.minReplicas: scaling.minReplicas 0 requires spec.router: only the router holds a request "
        "while no replica runs, and its queue is what wakes the service"
    ]
    obj["spec"]["router"] = {}
    assert validate_manifest(obj) == []
    assert InferenceService.model_validate(obj).spec.scaling.min_replicas == 0


def test_default_policy_round_trips() -> None:
    policy = SLOPolicy.model_validate({"metadata": {"name": "default"}})
    assert validate_manifest({"kind": "SLOPolicy", **policy.to_wire()}) == []
    assert policy.spec.tier_batch_windows.interactive.max_ms == 5
    assert policy.spec.tier_batch_windows.batch.min_ms == 20


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("nodeSelector", {"": None, "zone": "a"}, {"zone": "a"}),  # a null map entry is pruned
        ("nodeSelector", None, {}),  # a null field too, then defaulted
    ],
)
def test_nulls_are_pruned_before_validation_as_the_api_server_does(
    field: str, value: Any, expected: dict[str, str]
) -> None:
    manifest = _service()
    manifest["spec"]["accelerators"][0][field] = value
    assert validate_manifest(manifest) == []
    service = InferenceService.model_validate(apply_defaults(manifest, schema_for("InferenceService")))
    assert service.spec.accelerators[0].node_selector == expected
