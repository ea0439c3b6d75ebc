"""Generate the apiextensions/v1 CRD YAML from the pydantic models (the single source of truth).

`python -m goodput.crds` rewrites the YAML files next to this module; a test fails when they are stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from goodput.crds import inferenceservice, slopolicy
from goodput.crds.common import GROUP, VERSION

HERE = Path(__file__).parent
# kustomize reads only files under its root, so the manifests carry a generated copy too.
OUTPUT_DIRS = (HERE, HERE.parent / "manifests" / "crds")

# OpenAPI v3.0 (what the API server speaks) has no null type and wants boolean exclusive bounds.
_DROP_KEYS = {"title", "additionalProperties", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's JSON Schema into a Kubernetes structural schema: refs inlined, no nulls."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema['anyOf']}")
        rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        else:
            out[key] = value
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = structural(additional, defs)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def object_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return structural(raw, raw.get("$defs", {}))


def crd(
    *,
    kind: str,
    plural: str,
    short_names: tuple[str, ...],
    scope: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    printer_columns: list[dict[str, str]],
    spec_required: bool,
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": object_schema(spec),
            "status": object_schema(status),
        },
    }
    if spec_required:
        schema["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
                "categories": ["goodput"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _column(name: str, json_path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD object, for every custom resource of goodput."""
    isvc = crd(
        kind=inferenceservice.KIND,
        plural=inferenceservice.PLURAL,
        short_names=inferenceservice.SHORT_NAMES,
        scope="Namespaced",
        spec=inferenceservice.InferenceServiceSpec,
        status=inferenceservice.InferenceServiceStatus,
        spec_required=True,
        printer_columns=[
            _column("Tier", ".status.plan.tier"),
            _column("Replicas", ".status.replicas", "integer"),
            _column("TP", ".status.plan.tensorParallel", "integer"),
            _column("Accelerator", ".status.plan.accelerator"),
            _column("TTFT-p95-ms", ".status.observed.ttftP95Ms", "number"),
            _column("TPOT-p95-ms", ".status.observed.tpotP95Ms", "number"),
            _column("SLO-Met", '.status.conditions[?(@.type=="SLOMet")].status'),
            # the Ready condition's reason: a refused spec (InvalidSpec, PlanningFailed) reads on its row
            _column("Status", '.status.conditions[?(@.type=="Ready")].reason'),
            _column("Cost-per-h", ".status.plan.costPerHour", "number", priority=1),
            _column("Mode", ".spec.mode", priority=1),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
    )
    policy = crd(
        kind=slopolicy.KIND,
        plural=slopolicy.PLURAL,
        short_names=slopolicy.SHORT_NAMES,
        scope="Cluster",
        spec=slopolicy.SLOPolicySpec,
        status=slopolicy.SLOPolicyStatus,
        spec_required=False,
        printer_columns=[
            _column("Headroom", ".spec.headroom", "number"),
            _column("Interval-s", ".spec.evaluationIntervalSeconds", "number"),
            _column("Scale-Down-s", ".spec.scaleDownStabilizationSeconds", "number"),
            _column("Services", ".status.services", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
    )
    return {
        f"{inferenceservice.PLURAL}.{GROUP}.yaml": isvc,
        f"{slopolicy.PLURAL}.{GROUP}.yaml": policy,
    }


def render(obj: dict[str, Any]) -> str:
    header = "# Generated by `python -m goodput.crds` from the pydantic models in crds/. Do not edit.\n"
    return header + yaml.safe_dump(obj, sort_keys=False, width=120)


def write(directories: tuple[Path, ...] = OUTPUT_DIRS) -> list[Path]:
    paths = []
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        for name, obj in all_crds().items():
            path = directory / name
            path.write_text(render(obj))
            paths.append(path)
    return paths
