"""Shared fixtures for the operator's tests: specs from the shipped examples and hand-made plans."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from goodput.controllers.builders import Owner
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.policies.types import Candidate
from testkit import specs

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _example_spec(name: str, **changes: object) -> InferenceServiceSpec:
    spec = yaml.safe_load((EXAMPLES / name).read_text())["spec"]
    spec.update(changes)
    return InferenceServiceSpec.model_validate(spec)


@pytest.fixture
def example_spec() -> Callable[..., InferenceServiceSpec]:
    """Spec of a shipped example, e.g. example_spec("tiny-cpu.yaml")."""
    return _example_spec


@pytest.fixture
def make_plan() -> Callable[..., Candidate]:
    """A hand-made plan: make_plan(accelerator="L40S", tp=2, tiers=(("interactive", replicas, batch, ms),))."""
    return specs.make_plan


@pytest.fixture
def owner() -> Owner:
    return Owner(name="tiny", namespace="team-a", uid="0b5f6f1e-1111-4222-8333-944445555666")
