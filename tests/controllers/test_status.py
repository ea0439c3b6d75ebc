"""Status on the wire: conditions per the API conventions, plans and scaler state that survive a restart."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from goodput.controllers import actuate, conditions, reconcile, status
from goodput.controllers.conditions import Cond
from goodput.controllers.planning import PlanCache
from goodput.controllers.runtime import ServiceRecord
from goodput.crds.inferenceservice import InferenceServiceStatus
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.autoscale import autoscale
from goodput.policies.types import Candidate, Decision, ScalerState
from testkit.observations import steady_window
from testkit.specs import llama_h100

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("first", "second", "moves"),
    [
        (
            Cond("Ready", "True", "ReplicasReady", "ok"),
            Cond("Ready", "True", "ReplicasReady", "still ok"),
            False,
        ),
        (
            Cond("Ready", "True", "ReplicasReady", "ok"),
            Cond("Ready", "False", "ReplicasNotReady", "1/2"),
            True,
        ),
        (Cond("SLOMet", "Unknown", "NoObservation", "-"), Cond("SLOMet", "True", "Met", "ok"), True),
    ],
)
def test_transition_time_moves_only_with_the_status(first: Cond, second: Cond, moves: bool) -> None:
    before = conditions.merge([], [first], 1, T0)
    after = conditions.merge(before, [second], 2, T0 + timedelta(minutes=5))
    (entry,) = after
    assert entry["message"] == second.message
    assert entry["observedGeneration"] == 2
    expected = T0 + timedelta(minutes=5) if moves else T0
    assert entry["lastTransitionTime"] == conditions.timestamp(expected)


def test_conditions_keep_a_stable_order_and_validate() -> None:
    merged = conditions.merge(
        [],
        [
            Cond("InvalidSpec", "False", "SpecValid", "ok"),
            Cond("MetricsAvailable", "False", "Stale", "old"),
            Cond("Ready", "True", "ReplicasReady", "ok"),
        ],
        3,
        T0,
    )
    assert [c["type"] for c in merged] == ["Ready", "MetricsAvailable", "InvalidSpec"]
    InferenceServiceStatus.model_validate({"conditions": merged})


def test_plan_round_trips_through_status(make_plan: Any) -> None:
    plan = make_plan(accelerator="L40S", tp=2, tiers=(("interactive", 3, 32, 3.0), ("batch", 1, 128, 30.0)))
    wire = status.plan_status(plan)
    assert wire["tensorParallel"] == 2
    assert [t["tier"] for t in wire["tiers"]] == ["interactive", "batch"]
    back = status.plan_from_status(wire, utilisation=plan.utilisation)
    assert back == plan


def test_scaler_state_survives_a_restart() -> None:
    state = ScalerState(ttft_factor=1.3, tpot_factor=0.8, calibration_samples=12)
    now = T0.timestamp()
    stored = {
        "calibration": status.calibration_status(state, now),
        "lastDecision": status.decision_status(now - 40, 2, 4, "scaled interactive 2→4"),
    }
    restored = status.state_from_status(stored)
    assert (restored.ttft_factor, restored.tpot_factor, restored.calibration_samples) == (1.3, 0.8, 12)
    assert restored.last_scale_time == pytest.approx(now - 40)
    assert status.state_from_status({}).last_scale_time is None


def test_observed_status_validates_and_keeps_zero_traffic() -> None:
    observation = replace(
        steady_window(T0.timestamp(), 0.0, ready=2, window=60, kv=0.0),
        router_queued=3.0,
        router_wait_p95_ms=412.5,
        router_ttft_p95_ms=1250.0,
    )
    wire = status.observed_status(observation)
    assert wire["rps"] == 0.0
    assert "ttftP95Ms" not in wire
    assert wire["readyReplicas"] == 2
    assert (wire["routerQueueDepth"], wire["routerQueueWaitP95Ms"], wire["routerTtftP95Ms"]) == (
        3.0,
        412.5,
        1250.0,
    )


def test_scaler_windows_round_trip_exactly_through_status() -> None:
    state = ScalerState(
        recommendations=((1000.25, 4), (1015.5, 6)),
        last_scale_time=None,
        load_history=((1000.25, 31.123456789), (1015.5, 12.5)),
        prompt_tokens_nodes=tuple(float(i) * 1.5 for i in range(16)),
        output_tokens_nodes=tuple(float(i) for i in range(16)),
        token_weight=412.75,
        cached_prompt_fraction=0.1875,
        last_quiet=990.0,
        slo_seen=51234.5,
        slo_missed=17.25,
        hint_time=985.0,
        steady_windows=3,
        idle_since=1001.5,
    )
    wire = {"scaler": status.scaler_status(state)}
    InferenceServiceStatus.model_validate(wire)
    assert status.state_from_status(wire) == state


def test_runs_of_equal_recommendations_keep_their_last_point() -> None:
    recs = ((0.0, 3), (15.0, 3), (30.0, 5), (45.0, 3), (60.0, 3), (75.0, 3))
    stored = status.state_from_status({"scaler": status.scaler_status(ScalerState(recommendations=recs))})
    assert stored.recommendations == ((15.0, 3), (30.0, 5), (75.0, 3))
    assert status.run_ends(()) == ()
    for since in (-1.0, 10.0, 20.0, 35.0, 70.0):  # what the stabilization windows read: values newer than t
        assert {r for t, r in stored.recommendations if t > since} == {r for t, r in recs if t > since}


@dataclass
class _RecordingKube:
    written: dict[str, Any] = field(default_factory=dict)

    async def patch_status(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.written = body


def test_a_restarted_operator_keeps_the_stabilization_window() -> None:
    """Peak load, then quiet: the operator restarts mid-window and must not scale down before it ends."""
    spec = llama_h100(expected_rps=5)
    policy, plans = SLOPolicySpec(cooldown_seconds=0), PlanCache()
    peak = planner.plan(spec, replace(planner.load_from_spec(spec), rps=120.0), policy, 1.0, 1.0).chosen
    assert peak is not None

    def step(plan: Candidate, state: ScalerState, now: float, rps: float) -> Decision:
        return autoscale(spec, policy, plan, steady_window(now, rps, ready=plan.replicas), state, now, plans)

    state = ScalerState()
    for now in (0.0, 15.0, 30.0):
        state = step(peak, state, now, 120.0).state
    record = ServiceRecord(
        namespace="ns", name="svc", uid="u", generation=1, spec=spec, plan=peak, state=state
    )
    kube = _RecordingKube()
    assert asyncio.run(actuate.write_status(kube, record, reconcile.compose(record, [], 30.0), 30.0))
    restarted = status.state_from_status(json.loads(json.dumps(kube.written)))  # as the API server keeps it
    quiet = 45.0
    assert step(peak, ScalerState(), quiet, 2.0).plan.replicas < peak.replicas  # forgetting would scale down
    decision = step(peak, restarted, quiet, 2.0)
    assert decision.plan.replicas == peak.replicas, decision.reason
