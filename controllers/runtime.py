"""What one operator process holds in memory: its clients, one record per service, the known policies.

Everything here can be rebuilt from the cluster (status keeps plan, calibration and the last decision), so a
restarted operator resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from goodput.controllers.config import OperatorConfig
from goodput.controllers.kube import KubeClient, KubeError
from goodput.controllers.planning import PlanCache
from goodput.controllers.prometheus import PrometheusReader, ServiceKey
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import DEFAULT_POLICY_NAME, SLOPolicySpec
from goodput.policies.types import Candidate, Observation, ScalerState


@dataclass
class ServiceRecord:
    """One InferenceService as the operator runs it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: InferenceServiceSpec
    plan: Candidate | None = None  # what runs (mode auto) or is recommended (mode recommend)
    state: ScalerState = field(default_factory=ScalerState)
    observation: Observation | None = None  # the last interval's, None when metrics were missing
    status: dict[str, Any] = field(default_factory=dict)  # as last written
    status_written_at: float = 0.0
    last_evaluated: float = 0.0
    applied: dict[str, str] = field(default_factory=dict)  # "Kind/name" → hash of the body last applied
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.name)

    @property
    def policy_name(self) -> str:
        return self.spec.policy_ref or DEFAULT_POLICY_NAME


BUILT_IN_DEFAULT = SLOPolicySpec()


class PolicyNotFound(LookupError):
    pass


@dataclass
class Runtime:
    config: OperatorConfig
    kube: KubeClient
    prometheus: PrometheusReader
    services: dict[ServiceKey, ServiceRecord] = field(default_factory=dict)
    policies: dict[str, SLOPolicySpec] = field(default_factory=dict)  # kept current by the SLOPolicy handlers
    absent_policies: set[str] = field(default_factory=set)  # looked up once, not found; handlers clear them
    plans: PlanCache = field(default_factory=PlanCache)  # memoized planner shared by all services
    ready_replicas: Any = None  # kopf.Index: (namespace, service) → (tier, desired, ready), from Deployments
    policy_users_written: dict[str, int] = field(default_factory=dict)  # SLOPolicy → status.services written
    # service → condition type → message of the last Warning Event posted for it; checked and set before any
    # await, so two reconciles racing on one stale body post one event, not two
    warned: dict[ServiceKey, dict[str, str]] = field(default_factory=dict)
    last_interval_end: float | None = None
    poller: asyncio.Task[None] | None = None

    async def policy(self, name: str | None) -> SLOPolicySpec:
        """The named policy; the built-in default when none is named and no `default` object exists."""
        wanted = name or DEFAULT_POLICY_NAME
        if wanted in self.policies:
            return self.policies[wanted]
        if wanted not in self.absent_policies:
            try:
                body = await self.kube.get("SLOPolicy", None, wanted)
            except KubeError as error:
                if not error.not_found:
                    raise
                self.absent_policies.add(wanted)
            else:
                self.set_policy(wanted, SLOPolicySpec.model_validate(body.get("spec") or {}))
                return self.policies[wanted]
        if wanted == DEFAULT_POLICY_NAME:
            return BUILT_IN_DEFAULT
        raise PolicyNotFound(f"SLOPolicy {wanted!r} does not exist")

    def existing_tiers(self, key: ServiceKey) -> set[str]:
        """Tiers that have a worker Deployment now, from the Kopf index (no API request)."""
        if self.ready_replicas is None:
            return set()
        return {tier for tier, _, _ in self.ready_replicas.get(key, [])}

    def forget(self, key: ServiceKey) -> None:
        """The service was deleted: a new object of the same name starts with nothing remembered."""
        self.services.pop(key, None)
        self.warned.pop(key, None)

    def users_of(self, policy: str) -> int:
        return sum(1 for record in self.services.values() if record.policy_name == policy)

    def set_policy(self, name: str, spec: SLOPolicySpec) -> None:
        self.policies[name] = spec
        self.absent_policies.discard(name)

    def drop_policy(self, name: str) -> None:
        self.policies.pop(name, None)
        self.absent_policies.add(name)

    async def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        await self.kube.close()
        await self.prometheus.close()
