"""Validate a manifest the way the API server does: defaults, the structural schema, then CEL rules.

Used by the tests (against the generated YAML, so they check what ships) and by `goodput plan -f`, so a
user sees the API server's verdict before applying.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonschema

from goodput.crds.cel import holds
from goodput.crds.generate import all_crds


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path from the object root, e.g. "spec.scaling.minReplicas"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def schema_for(kind: str) -> dict[str, Any]:
    for crd in all_crds().values():
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(f"unknown kind {kind!r}")


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill schema defaults into a copy of `obj`, as the API server does before validating.

    Like the API server, first drop null values of fields and map entries that are not nullable (it prunes
    them, then defaults), so `spec: null` is the empty spec and `nodeSelector: {"a": null}` the empty map.
    """
    if isinstance(obj, dict) and "properties" in schema:
        properties = schema["properties"]
        out = {k: v for k, v in obj.items() if v is not None or properties.get(k, {}).get("nullable")}
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    values = schema.get("additionalProperties")
    if isinstance(obj, dict) and isinstance(values, dict):
        return {
            k: apply_defaults(v, values) for k, v in obj.items() if v is not None or values.get("nullable")
        }
    if isinstance(obj, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj


def _dotted(path: list[Any]) -> str:
    parts: list[str] = []
    for element in path:
        if isinstance(element, int):
            parts[-1 if parts else 0 :] = [f"{parts[-1] if parts else ''}[{element}]"]
        else:
            parts.append(str(element))
    return ".".join(parts)


def _schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[FieldError]:
    validator = jsonschema.Draft4Validator(schema)
    errors = []
    for error in validator.iter_errors(obj):
        path = list(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            path.append(missing)
        errors.append(FieldError(_dotted(path) or "<root>", error.message))
    return errors


def as_cel_values(obj: Any, schema: dict[str, Any]) -> Any:
    """`type: number` fields as doubles, as the API server binds them in CEL (60 >= 1.0 holds, no overload error)."""
    if schema.get("type") == "number" and isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    if isinstance(obj, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: as_cel_values(v, props[k]) if k in props else v for k, v in obj.items()}
    if isinstance(obj, list) and "items" in schema:
        return [as_cel_values(item, schema["items"]) for item in obj]
    return obj


def _cel_errors(obj: Any, schema: dict[str, Any], path: list[Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(obj, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            if not holds(rule["rule"], as_cel_values(obj, schema)):
                where = path + [p for p in rule.get("fieldPath", "").split(".") if p]
                errors.append(FieldError(_dotted(where), rule["message"]))
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                errors += _cel_errors(obj[name], sub, [*path, name])
    elif isinstance(obj, list) and "items" in schema:
        for index, item in enumerate(obj):
            errors += _cel_errors(item, schema["items"], [*path, index])
    return errors


def validate_manifest(obj: dict[str, Any]) -> list[FieldError]:
    """Every error the API server would report for this InferenceService or SLOPolicy, or []."""
    kind = obj.get("kind")
    if kind not in ("InferenceService", "SLOPolicy"):
        return [FieldError("kind", f"expected InferenceService or SLOPolicy, got {kind!r}")]
    schema = schema_for(kind)
    defaulted = apply_defaults(obj, schema)
    errors = _schema_errors(defaulted, schema)
    return errors or _cel_errors(defaulted, schema, [])
