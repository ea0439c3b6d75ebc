"""One service's observation from an interval's Prometheus snapshot, or why there is none.

The operator's control interval and `goodput status`/`explain` both call it, so on-call sees exactly the
observation the operator acts on: the same TTFT target for the error budget, the same staleness rule.
"""

from __future__ import annotations

from goodput.controllers.conditions import Cond
from goodput.controllers.prometheus import ServiceKey, Snapshot
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.observe import build_observation
from goodput.policies.types import Observation


def observe_service(
    snapshot: Snapshot | None, key: ServiceKey, spec: InferenceServiceSpec, policy: SLOPolicySpec
) -> tuple[Observation | None, Cond]:
    """This interval's observation, or None with the MetricsAvailable=False reason (missing or stale).

    Freshness is the workers' newest sample; only where no worker series exists at all (a service scaled to
    zero, or whose first pods are starting) does the router's newest sample stand in, so a held request is seen.
    """
    if snapshot is None:
        return None, Cond("MetricsAvailable", "False", "PrometheusUnavailable", "Prometheus did not answer")
    tiers = snapshot.services.get(key)
    if not tiers:
        return None, Cond(
            "MetricsAvailable", "False", "NoSeries", "Prometheus has no series for this service"
        )
    age, router_age = snapshot.age(key), snapshot.router_age(key)
    stale = policy.stale_after_seconds
    router_only = age is None and router_age is not None and router_age <= stale
    if not router_only and (age is None or age > stale):
        shown = "no sample" if age is None else f"newest sample {age:.0f} s old"
        return None, Cond("MetricsAvailable", "False", "Stale", f"{shown} (stale after {stale:g} s)")
    (_, ttft_target_ms), _ = spec.slo.steering_targets()
    observation = build_observation(
        snapshot.time, snapshot.window_s, tiers, ttft_target_s=ttft_target_ms / 1000
    )
    if observation is None:
        return None, Cond(
            "MetricsAvailable", "False", "NoSeries", "Prometheus has no series for this service"
        )
    if router_only:  # no worker runs (scaled to zero, or starting): the router's queue is what there is
        return observation, Cond(
            "MetricsAvailable", "True", "RouterOnly", "no worker series; the router's queue is fresh"
        )
    return observation, Cond("MetricsAvailable", "True", "Fresh", f"window of {snapshot.window_s:g} s")
