"""Shared pieces of the custom-resource models: the camelCase base that checks its CEL rules, and conditions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from goodput.crds.rules import Rule

GROUP = "goodput.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class Resource(BaseModel):
    """Base of every spec and status record: camelCase on the wire, snake_case in Python.

    Subclasses list their cross-field CEL rules in `cel_rules`; the CRD generator emits them and the
    schema validator (crds.validation) evaluates them, so the API server and our tests enforce one set.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        if cls.cel_rules:
            schema["x-kubernetes-validations"] = [rule.as_schema() for rule in cls.cel_rules]
        return schema

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Resource:
        if self.cel_rules:
            from goodput.crds.cel import first_violation

            broken = first_violation(self.cel_rules, self.to_wire())
            if broken is not None:
                raise ValueError(f"{broken.field_path or '.'}: {broken.message}")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionType = Literal["Ready", "SLOMet", "MetricsAvailable", "CapacityLimited", "InvalidSpec"]


class Condition(Resource):
    """A condition per the Kubernetes API conventions."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)
