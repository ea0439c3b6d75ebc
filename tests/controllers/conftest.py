"""Shared fixtures for the operator's tests: specs from the shipped examples and hand-made plans."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from goodput.controllers.builders import Owner
from goodput.crds.inferenceservice import InferenceServiceSpec, Tier
from goodput.policies.types import Candidate, TierConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _example_spec(name: str, **changes: object) -> InferenceServiceSpec:
    spec = yaml.safe_load((EXAMPLES / name).read_text())["spec"]
    spec.update(changes)
    return InferenceServiceSpec.model_validate(spec)


def _make_plan(
    accelerator: str = "CPU",
    tp: int = 1,
    tiers: tuple[tuple[str, int, int, float], ...] = (("interactive", 2, 32, 3.0),),
    chunk_tokens: int = 512,
) -> Candidate:
    configs = tuple(TierConfig(Tier(t), replicas, batch, window) for t, replicas, batch, window in tiers)
    return Candidate(
        accelerator=accelerator,
        tensor_parallel=tp,
        replicas=sum(c.replicas for c in configs),
        max_batch=configs[0].max_batch,
        batch_window_ms=configs[0].batch_window_ms,
        chunk_tokens=chunk_tokens,
        tier="mixed" if len(configs) > 1 else tiers[0][0],
        tiers=configs,
        predicted_ttft_p95_ms=120.0,
        predicted_tpot_p95_ms=8.0,
        cost_per_hour=0.1,
        utilisation=0.6,
    )


@pytest.fixture
def example_spec() -> Callable[..., InferenceServiceSpec]:
    """Spec of a shipped example, e.g. example_spec("tiny-cpu.yaml")."""
    return _example_spec


@pytest.fixture
def make_plan() -> Callable[..., Candidate]:
    """A hand-made plan: make_plan(accelerator="L40S", tp=2, tiers=(("interactive", replicas, batch, ms),))."""
    return _make_plan


@pytest.fixture
def owner() -> Owner:
    return Owner(name="tiny", namespace="team-a", uid="0b5f6f1e-1111-4222-8333-944445555666")
