"""Scale to zero: when a service whose minReplicas is 0 stops costing anything, and what wakes it.

A window is idle when no request finished in it and none is queued or running, in the workers or in the
router. The idle period (the SLOPolicy's `scaleToZeroAfterSeconds`) runs from the first idle window; any busy
window restarts it. Once it has passed, every tier goes to zero at once: the period is that step's
stabilization, so neither the scale-down window nor the max step delays it further. Until then the ordinary
plan decides with at least one replica, so a quiet service does not drift to zero through the scale-down path.

At zero no worker runs, and the router's queue is all the operator sees: nothing held, the service stays at
zero; a held request is demand (policies/demand.py counts the router's queue as backlog), and the ordinary plan
wakes the first tier, the one where the router holds requests while no replica is in rotation.
"""

from __future__ import annotations

from dataclasses import replace

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.types import Candidate, Decision, Observation, ScalerState


def is_idle(obs: Observation) -> bool:
    """No request finished in the window, and none waits or runs in a worker or the router."""
    return (
        obs.requests <= 0
        and (obs.running or 0.0) <= 0
        and obs.backlog <= 0
        and (obs.router_in_flight or 0.0) <= 0
    )


def track_idle(obs: Observation, state: ScalerState, now: float) -> ScalerState:
    """The state with `idle_since` started by the first idle window and cleared by any busy one."""
    if not is_idle(obs):
        return state if state.idle_since is None else replace(state, idle_since=None)
    return state if state.idle_since is not None else replace(state, idle_since=now)


def awake(spec: InferenceServiceSpec) -> InferenceServiceSpec:
    """The spec the ordinary plan sizes with: minReplicas 0 counts as 1 (zero is this module's decision)."""
    if spec.scaling.min_replicas > 0:
        return spec
    return spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"min_replicas": 1})})


def zero_decision(
    spec: InferenceServiceSpec,
    policy: SLOPolicySpec,
    current: Candidate,
    obs: Observation,
    state: ScalerState,
    now: float,
) -> Decision | None:
    """Hold at zero while nothing is held, or go to zero after the idle period; None when the ordinary plan
    decides (minReplicas above 0, a request held at zero, or a service not idle long enough)."""
    if spec.scaling.min_replicas > 0:
        return None
    at_zero = replace(state, recommendations=((now, 0),))
    if current.replicas == 0:
        if obs.backlog > 0:
            return None
        reason = f"holding {current.tier} at 0: scaled to zero, no request held by the router"
        return Decision(current, at_zero, "hold", reason, True, None)
    if state.idle_since is None:
        return None
    idle_s = now - state.idle_since
    if idle_s < policy.scale_to_zero_after_seconds - 1e-6:
        return None
    zero = replace(
        current,
        replicas=0,
        tiers=tuple(replace(t, replicas=0) for t in current.tiers),
        cost_per_hour=0.0,
    )
    reason = (
        f"scaled {current.tier} {current.replicas}→0: scaled to zero, idle (no request finished, queued or "
        f"running) for {idle_s:.0f} s ≥ {policy.scale_to_zero_after_seconds:g} s"
    )
    return Decision(zero, replace(at_zero, last_scale_time=now), "scale", reason, True, None)
