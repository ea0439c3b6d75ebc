"""The SLOPolicy resource: the knobs on-call tunes once for every service that references it."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from goodput.crds.common import Condition, Resource
from goodput.crds.rules import Rule

KIND = "SLOPolicy"
PLURAL = "slopolicies"
SHORT_NAMES = ("slop",)
DEFAULT_POLICY_NAME = "default"


class MissingMetrics(StrEnum):
    """What the control loop does when Prometheus has no fresh data for a service."""

    HOLD = "hold"
    USE_HINTS = "useHints"


class WindowRange(Resource):
    min_ms: float = Field(ge=0, le=1000)
    max_ms: float = Field(ge=0, le=1000)

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(rule="self.minMs <= self.maxMs", message="minMs must not exceed maxMs", field_path=".minMs"),
    )


class TierWindows(Resource):
    interactive: WindowRange = Field(default_factory=lambda: WindowRange(min_ms=2, max_ms=5))
    batch: WindowRange = Field(default_factory=lambda: WindowRange(min_ms=20, max_ms=40))


class CalibrationPolicy(Resource):
    enabled: bool = Field(default=True, description="Fit observed/predicted latency factors online.")
    smoothing: float = Field(
        default=0.3, gt=0, le=1, description="Weight of the newest observed/predicted ratio (EWMA)."
    )
    min_factor: float = Field(default=0.5, gt=0, description="Lower clamp of a calibration factor.")
    max_factor: float = Field(default=3.0, gt=0, description="Upper clamp of a calibration factor.")
    min_requests: int = Field(default=50, ge=1, description="Requests in a window before it counts.")

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.minFactor <= 1.0 && self.maxFactor >= 1.0",
            message="the factor range must contain 1.0",
            field_path=".minFactor",
        ),
    )


class SLOPolicySpec(Resource):
    headroom: float = Field(
        default=0.2, ge=0, lt=1, description="Share of capacity kept free when planning (0.2 plans to 80%)."
    )
    adaptive_headroom: bool = Field(
        default=True,
        description=(
            "Lower the headroom, in quarter steps, while the service's first tokens over the last hour spend "
            "less than half the error budget its attainment target allows. On on/off traffic (a quiet gap in the "
            "last hour) never lower it, and raise it while more than half is spent, up to planning to "
            "(1 - headroom)^2 of capacity when all of it is."
        ),
    )
    evaluation_interval_seconds: float = Field(
        default=15,
        ge=1,
        le=3600,
        description="Control interval: how often observations are read and decisions made.",
    )
    scale_up_stabilization_seconds: float = Field(
        default=15,
        ge=0,
        le=3600,
        description=(
            "Scale up only to the least recommendation of this window (15 s: two control intervals agree, so "
            "one window's noisy rate does not hold a replica for a scale-down window). An SLO breach with "
            "requests queued, or more requests waiting than replicas ready, scales up at once."
        ),
    )
    scale_down_stabilization_seconds: float = Field(
        default=300,
        ge=0,
        le=86400,
        description="Scale down only to the greatest recommendation of this window.",
    )
    cooldown_seconds: float = Field(default=30, ge=0, le=3600, description="Least time between two scalings.")
    max_scale_up_step: int = Field(default=8, ge=1, le=1000, description="Most replicas added per decision.")
    max_scale_down_step: int = Field(
        default=2, ge=1, le=1000, description="Most replicas removed per decision."
    )
    scale_to_zero_after_seconds: float = Field(
        default=300,
        ge=1,
        le=86400,
        description=(
            "With minReplicas 0: how long a service must be idle (no request finished, queued or running, in "
            "the workers or the router) before every tier is scaled to zero."
        ),
    )
    tier_batch_windows: TierWindows = Field(default_factory=TierWindows)
    missing_metrics: MissingMetrics = Field(
        default=MissingMetrics.HOLD,
        description="Without fresh metrics: hold the current plan, or plan from the spec's traffic hints. Never scales down.",
    )
    stale_after_seconds: float = Field(
        default=60, ge=1, le=3600, description="Metrics older than this count as missing."
    )
    rollout_saving_threshold: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Least predicted cost saving that justifies a TP or accelerator change.",
    )
    calibration: CalibrationPolicy = Field(default_factory=CalibrationPolicy)

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.staleAfterSeconds >= self.evaluationIntervalSeconds",
            message="staleAfterSeconds must be at least evaluationIntervalSeconds",
            field_path=".staleAfterSeconds",
        ),
        Rule(
            rule="self.scaleToZeroAfterSeconds >= self.evaluationIntervalSeconds",
            message="scaleToZeroAfterSeconds must be at least evaluationIntervalSeconds (one idle window)",
            field_path=".scaleToZeroAfterSeconds",
        ),
    )


class SLOPolicyStatus(Resource):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    services: int | None = Field(default=None, ge=0, description="InferenceServices that use this policy.")


class SLOPolicy(Resource):
    api_version: Literal["goodput.dev/v1alpha1"] = "goodput.dev/v1alpha1"
    kind: Literal["SLOPolicy"] = "SLOPolicy"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: SLOPolicySpec = Field(default_factory=SLOPolicySpec)
    status: SLOPolicyStatus | None = None
