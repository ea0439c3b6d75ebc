"""Generate docs/reference.md, the field reference of InferenceService and SLOPolicy, from the pydantic models.

`python -m goodput.crds.reference` rewrites the page; a test fails when it is stale. Types, bounds and defaults come
from the generated CRD schema (what the API server enforces), descriptions from the models' docstrings and
Field descriptions, cross-field rules from their CEL rules.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from goodput.crds import inferenceservice, slopolicy
from goodput.crds.common import API_VERSION, Resource
from goodput.crds.generate import all_crds

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    short_names: tuple[str, ...]
    scope: str
    spec: type[Resource]
    status: type[Resource]
    summary: str


KINDS = (
    Kind(
        inferenceservice.KIND,
        inferenceservice.PLURAL,
        inferenceservice.SHORT_NAMES,
        "Namespaced",
        inferenceservice.InferenceServiceSpec,
        inferenceservice.InferenceServiceStatus,
        "One model served at its latency SLO. Platform teams write `spec`; the operator writes `status`.",
    ),
    Kind(
        slopolicy.KIND,
        slopolicy.PLURAL,
        slopolicy.SHORT_NAMES,
        "Cluster",
        slopolicy.SLOPolicySpec,
        slopolicy.SLOPolicyStatus,
        "How the control loop behaves for every service that names it in `spec.policyRef`. "
        "On-call tunes it; editing it re-plans those services.",
    ),
)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside `X`, `X | None`, `list[X]` or `dict[str, X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found is not None:
                return found
    return None


def type_name(node: dict[str, Any], child: str | None) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type", "object")
    if kind == "array":
        items = node.get("items", {})
        return f"list of [{child}](#{anchor(child)})" if child else f"list of {items.get('type', 'object')}"
    if kind == "object":
        if child:
            return f"[{child}](#{anchor(child)})"
        value = node.get("additionalProperties", {}).get("type")
        return f"map of string to {value}" if value else "object"
    if node.get("format") == "date-time":
        return "timestamp (RFC 3339)"
    return kind


def bounds(node: dict[str, Any]) -> str:
    parts = []
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '≥'} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '≤'} {node['maximum']}")
    if "minLength" in node or "maxLength" in node:
        parts.append(f"length {node.get('minLength', 0)}–{node.get('maxLength', '∞')}")
    if "minItems" in node or "maxItems" in node:
        parts.append(f"{node.get('minItems', 0)}–{node.get('maxItems', '∞')} items")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return ", ".join(parts)


def default_of(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        value = value.to_wire() if isinstance(value, Resource) else value
    elif field.default is PydanticUndefined or field.default is None:
        return ""
    else:
        value = field.default
    return f"`{json.dumps(value, default=str)}`"


def anchor(title: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation other than '-' dropped, spaces as '-'."""
    return "".join(c for c in title.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section(
    path: str, model: type[BaseModel], schema: dict[str, Any], out: list[str], seen: dict[type, str]
) -> None:
    """A table for `model` at `path`, then one section per nested model not yet documented."""
    seen[model] = path
    out += [f"### {path}", ""]
    if model.__doc__ and model.__doc__ is not Resource.__doc__:
        out += [cell(model.__doc__), ""]
    out += ["| Field | Type | Required | Default | Bounds | Description |", "|---|---|---|---|---|---|"]
    children: list[tuple[str, type[BaseModel], dict[str, Any]]] = []
    required = set(schema.get("required", []))
    for name, field in model.model_fields.items():
        wire = field.alias or name
        node = schema["properties"][wire]
        child = nested_model(field.annotation)
        child_path = None
        if child is not None:
            pending = {c: p for p, c, _ in children}
            child_path = seen.get(child) or pending.get(child)
            if child_path is None:
                child_path = f"{path}.{wire}" + ("[]" if node.get("type") == "array" else "")
                children.append((child_path, child, node.get("items", node)))
        description = cell(field.description or "")
        out.append(
            f"| `{wire}` | {type_name(node, child_path)} | {'yes' if wire in required else ''} "
            f"| {default_of(model, name)} | {cell(bounds(node))} | {description} |"
        )
    rules = getattr(model, "cel_rules", ())
    if rules:
        out += ["", "Rules the API server checks:", ""]
        out += [f"- {rule.message} (`{rule.rule}`)" for rule in rules]
    out.append("")
    for child_path, child, child_schema in children:
        if child not in seen:
            section(child_path, child, child_schema, out, seen)


def crd_for(kind: Kind) -> dict[str, Any]:
    return next(c for c in all_crds().values() if c["spec"]["names"]["kind"] == kind.name)


def render() -> str:
    out = [
        "# API reference",
        "",
        "<!-- Generated by `python -m goodput.crds.reference` from the pydantic models in crds/. Do not edit. -->",
        "",
        f"Both resources belong to the API group and version `{API_VERSION}`. Field names are camelCase on the wire;",
        "defaults are filled in by the API server. The bounds and rules below are enforced at admission, so a",
        "manifest that breaks one is rejected with the field named (`goodput plan -f FILE` shows the same verdict",
        "before you apply).",
        "",
    ]
    for kind in KINDS:
        crd = crd_for(kind)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]["properties"]
        out += [f"## {kind.name}", "", kind.summary, ""]
        out += [
            f"- scope: {kind.scope}; plural `{kind.plural}`; short name"
            f"{'s' if len(kind.short_names) > 1 else ''} {', '.join(f'`{s}`' for s in kind.short_names)}",
            f"- `kubectl get {kind.plural}` shows: "
            + ", ".join(f"{c['name']} (`{c['jsonPath']}`)" for c in version["additionalPrinterColumns"]),
            "",
        ]
        seen: dict[type, str] = {}
        section(f"{kind.name}.spec", kind.spec, schema["spec"], out, seen)
        section(f"{kind.name}.status", kind.status, schema["status"], out, seen)
    return "\n".join(out).rstrip() + "\n"


def write(path: Path = OUTPUT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
