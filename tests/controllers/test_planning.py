"""The operator's planner cache returns exactly what the planner would, and only for the exact same inputs."""

from __future__ import annotations

from typing import Any

import pytest

from goodput.controllers.planning import PlanCache
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.types import Load


def test_same_inputs_hit_and_match_a_fresh_plan(example_spec: Any) -> None:
    spec = example_spec("tiny-cpu.yaml")
    cache = PlanCache(size=2)
    load = planner.load_from_spec(spec)
    first = cache(spec, load, SLOPolicySpec(), 1.0, 1.0)
    again = cache(spec, planner.load_from_spec(spec), SLOPolicySpec(), 1.0, 1.0)
    assert again is first
    assert (cache.hits, cache.misses) == (1, 1)
    assert first == planner.plan(spec, load, SLOPolicySpec(), 1.0, 1.0)


@pytest.mark.parametrize(
    "change",
    [
        {"ttft": 1.2},
        {"policy": SLOPolicySpec(headroom=0.4)},
        {"rps": 7.0},
    ],
)
def test_any_input_change_misses(example_spec: Any, change: dict[str, Any]) -> None:
    spec = example_spec("tiny-cpu.yaml")
    base = planner.load_from_spec(spec)
    key = PlanCache.key(spec, base, SLOPolicySpec(), 1.0, 1.0)
    load = Load(change.get("rps", base.rps), base.prompt_tokens, base.output_tokens, base.batch_fraction)
    other = PlanCache.key(spec, load, change.get("policy", SLOPolicySpec()), change.get("ttft", 1.0), 1.0)
    assert other != key
