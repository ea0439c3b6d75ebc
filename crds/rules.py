"""A CEL validation rule of a custom resource: what the CRD YAML emits and crds.cel evaluates."""

from __future__ import annotations

from pydantic import BaseModel


class Rule(BaseModel):
    """One `x-kubernetes-validations` entry: a CEL rule with the field it blames when it fails."""

    rule: str
    message: str
    field_path: str | None = None

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry
