"""The pure parts of the handlers: which conditions a plan, an observation and the Deployments lead to."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from goodput.controllers import reconcile
from goodput.controllers.observation import observe_service
from goodput.controllers.prometheus import Snapshot
from goodput.controllers.runtime import ServiceRecord
from goodput.crds.inferenceservice import Mode, RouterSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.observe import TierWindow
from goodput.policies.types import Decision, PlanResult, ScalerState


def _record(example_spec: Any, make_plan: Any, **spec_changes: Any) -> ServiceRecord:
    spec = example_spec("tiny-cpu.yaml").model_copy(update=spec_changes)
    return ServiceRecord(namespace="ns", name="tiny", uid="u", generation=3, spec=spec, plan=make_plan())


@pytest.mark.parametrize(
    ("constraint", "invalid", "limited", "reason"),
    [
        ("memory: weights 810 GB exceed 4 × CPU", "True", "False", "ModelDoesNotFit"),
        ("ttft: no rate meets 5 ms", "True", "False", "SLOUnachievable"),
        ("max_replicas: needs 40 > 8", "False", "True", "NoFeasiblePlan"),
        ("budget: $90/h > $10/h", "False", "True", "NoFeasiblePlan"),
    ],
)
def test_no_feasible_plan_names_the_binding_constraint(
    make_plan: Any, constraint: str, invalid: str, limited: str, reason: str
) -> None:
    best = replace(make_plan(), rejected=constraint)
    result = PlanResult(
        chosen=None, alternatives=(best,), binding_constraint=constraint, kv_bytes_per_token=1
    )
    conds = {c.type: c for c in reconcile.infeasible_conditions(result)}
    assert (conds["InvalidSpec"].status, conds["CapacityLimited"].status) == (invalid, limited)
    assert reason in (conds["InvalidSpec"].reason, conds["CapacityLimited"].reason)
    assert constraint in conds["InvalidSpec" if invalid == "True" else "CapacityLimited"].message
    assert conds["Ready"].status == "False"


@pytest.mark.parametrize(
    ("snapshot", "reason"),
    [
        (None, "PrometheusUnavailable"),
        (Snapshot(time=100.0, window_s=60.0), "NoSeries"),
        (
            Snapshot(
                time=100.0,
                window_s=60.0,
                services={("ns", "tiny"): {"interactive": TierWindow(requests=0.0, running=0.0)}},
                newest_sample={("ns", "tiny"): 100.0 - 120.0},
            ),
            "Stale",
        ),
        (
            Snapshot(
                time=100.0,
                window_s=60.0,
                services={("ns", "tiny"): {"interactive": TierWindow(requests=0.0, running=0.0)}},
                newest_sample={("ns", "tiny"): 99.0},
            ),
            "Fresh",
        ),
        (  # scaled to zero: no worker series at all, the router's fresh
            Snapshot(
                time=100.0,
                window_s=60.0,
                services={
                    ("ns", "tiny"): {"interactive": TierWindow(router_queued=1.0, router_in_flight=0.0)}
                },
                router_newest={("ns", "tiny"): 99.0},
            ),
            "RouterOnly",
        ),
        (  # the router's series never stand in for workers that have (stale) series
            Snapshot(
                time=100.0,
                window_s=60.0,
                services={("ns", "tiny"): {"interactive": TierWindow(running=0.0, router_queued=0.0)}},
                newest_sample={("ns", "tiny"): 100.0 - 120.0},
                router_newest={("ns", "tiny"): 99.0},
            ),
            "Stale",
        ),
        (  # nor does a stale router
            Snapshot(
                time=100.0,
                window_s=60.0,
                services={("ns", "tiny"): {"interactive": TierWindow(router_queued=0.0)}},
                router_newest={("ns", "tiny"): 100.0 - 120.0},
            ),
            "Stale",
        ),
    ],
)
def test_metrics_missing_stale_or_fresh(
    example_spec: Any, make_plan: Any, snapshot: Snapshot | None, reason: str
) -> None:
    record = _record(example_spec, make_plan)
    observation, condition = observe_service(
        snapshot, record.key, record.spec, SLOPolicySpec(stale_after_seconds=60)
    )
    assert condition.reason == reason
    assert (condition.status == "True") == (observation is not None)
    if observation is not None:
        assert observation.rps == 0.0  # zero traffic is an observation, not missing data


@pytest.mark.parametrize(
    ("ready", "mode", "status", "reason"),
    [
        ({"interactive": (2, 2)}, Mode.AUTO, "True", "ReplicasReady"),
        ({"interactive": (2, 1)}, Mode.AUTO, "False", "ReplicasNotReady"),
        ({}, Mode.AUTO, "False", "ReplicasNotReady"),
        ({}, Mode.RECOMMEND, "True", "RecommendOnly"),
        ({"interactive": (0, 0)}, "zero", "True", "ScaledToZero"),
    ],
)
def test_ready_follows_the_deployments(
    example_spec: Any, make_plan: Any, ready: dict[str, tuple[int, int]], mode: Mode, status: str, reason: str
) -> None:
    record = _record(example_spec, make_plan, mode=Mode.AUTO if mode == "zero" else mode)
    if mode == "zero":
        record.plan = make_plan(tiers=(("interactive", 0, 32, 3.0),))
    condition = reconcile.ready_condition(record, ready)  # the plan wants 2 interactive replicas, or 0
    assert (condition.status, condition.reason) == (status, reason)


@pytest.mark.parametrize(
    ("replicas", "slo_met", "limited"),
    [(4, False, "True"), (4, True, "False"), (2, False, "False"), (4, None, "False")],
)
def test_capacity_limited_means_missing_the_slo_at_the_limit(
    example_spec: Any, make_plan: Any, replicas: int, slo_met: bool | None, limited: str
) -> None:
    record = _record(example_spec, make_plan)  # maxReplicas 4 in the example
    plan = make_plan(tiers=(("interactive", replicas, 32, 3.0),))
    decision = Decision(plan, ScalerState(), "hold", "TTFT p95 900 ms > 500 ms", True, slo_met)
    assert reconcile.capacity_condition(record, decision).status == limited


def test_slo_met_is_unknown_at_zero(make_plan: Any) -> None:
    zero = make_plan(tiers=(("interactive", 0, 32, 3.0),))
    condition = reconcile.slo_condition(Decision(zero, ScalerState(), "hold", "idle", True, None))
    assert (condition.status, condition.reason) == ("Unknown", "ScaledToZero")


@pytest.mark.parametrize(
    ("router", "mode", "endpoint"),
    [
        (None, Mode.AUTO, None),
        (RouterSpec(), Mode.AUTO, "http://tiny.ns.svc:80"),
        (RouterSpec(), Mode.RECOMMEND, None),  # recommend creates nothing, so there is no endpoint to show
    ],
)
def test_status_shows_the_routers_endpoint(example_spec: Any, make_plan: Any, router, mode, endpoint) -> None:
    record = _record(example_spec, make_plan, router=router, mode=mode)
    assert reconcile.compose(record, [], 30.0).get("endpoint") == endpoint
