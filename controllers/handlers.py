"""Kopf handlers: a thin shell that hands each event to controllers.reconcile.

InferenceService create/update/resume → reconcile. SLOPolicy create/update/resume → re-plan every service
that references it, found through a kopf index of services by policyRef. A kopf index over the workers'
Deployments gives the poller ready replicas without extra API reads. The one startup handler applies Kopf's
settings (controllers.kopf_settings), builds the Runtime and spawns the shared poller; cleanup stops it. No
handler adds a finalizer: deleting a service never waits for us, and its children go with it through their
owner references.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from goodput.controllers import kopf_settings, metrics, naming, poller, reconcile
from goodput.controllers.config import OperatorConfig
from goodput.controllers.kube import KubeClient
from goodput.controllers.metrics import RECONCILE_ERRORS
from goodput.controllers.prometheus import PrometheusReader
from goodput.controllers.runtime import PolicyNotFound, Runtime
from goodput.crds.common import GROUP, VERSION
from goodput.crds.inferenceservice import PLURAL as SERVICES
from goodput.crds.slopolicy import DEFAULT_POLICY_NAME, SLOPolicySpec
from goodput.crds.slopolicy import PLURAL as POLICIES

log = logging.getLogger("goodput.operator")
POLICY_RETRY_S = 30
WORKERS = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY, naming.LABEL_NAME: naming.WORKER_APP}


def runtime(memo: kopf.Memo) -> Runtime:
    return memo["goodput"]


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: kopf.Logger, **kwargs: Any) -> None:
    """The one startup handler: Kopf's settings, then the runtime and the shared poller, from OperatorConfig."""
    config = OperatorConfig.from_env()
    kopf_settings.apply(settings)
    info = login(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: neither in-cluster nor a kubeconfig")
    rt = Runtime(
        config=config,
        kube=KubeClient.connect(
            info,
            config.request_timeout_s,
            config.max_in_flight,
            relogin=lambda: login(settings=settings, logger=logger),
        ),
        prometheus=PrometheusReader.connect(config.prometheus_url, config.window_s, config.request_timeout_s),
        ready_replicas=kwargs.get("ready_replicas"),
    )
    memo["goodput"] = rt
    if config.metrics_port >= 0:
        memo["metrics_server"] = metrics.serve(config.metrics_port)
    rt.poller = asyncio.create_task(poller.poll_forever(rt), name="goodput-poller")
    logger.info(f"polling {config.prometheus_url} every {config.poll_interval_s:g} s")


@kopf.on.login()
def login(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else $KUBECONFIG read now (Kopf's own readers), else the client library.

    The operator's writes use the same credentials as Kopf's watches (see `start`).
    """
    return (
        kopf.login_with_service_account(settings=settings, logger=logger)
        or kopf.login_with_kubeconfig(settings=settings, logger=logger)
        or kopf.login_via_client(settings=settings, logger=logger)
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("goodput")
    if rt is not None:
        await rt.close()
    server = memo.get("metrics_server")
    if server is not None:
        server[0].shutdown()


@kopf.on.probe(id="poller")
def poller_alive(memo: kopf.Memo, **_: Any) -> float | None:
    """Seconds since the last control interval ended; fails liveness when the poller is stuck."""
    rt = runtime(memo)
    if rt.poller is not None and rt.poller.done():
        raise kopf.PermanentError("the poller task has stopped")
    if rt.last_interval_end is None:
        return None
    age = time.time() - rt.last_interval_end
    if age > 10 * rt.config.poll_interval_s + 60:
        raise kopf.PermanentError(f"no control interval for {age:.0f} s")
    return age


@kopf.index(GROUP, VERSION, SERVICES)
def services_by_policy(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, str]]:
    return {spec.get("policyRef") or DEFAULT_POLICY_NAME: (namespace, name)}


@kopf.index("apps", "v1", "deployments", labels=WORKERS)
def ready_replicas(
    namespace: str, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], tuple[str, int, int]] | None:
    service, tier = labels.get(naming.LABEL_SERVICE), labels.get(naming.LABEL_TIER)
    if not service or not tier:
        return None
    return {
        (namespace, service): (tier, int(spec.get("replicas") or 0), int(status.get("readyReplicas") or 0))
    }


@kopf.on.create(GROUP, VERSION, SERVICES)
@kopf.on.update(GROUP, VERSION, SERVICES, field="spec")
@kopf.on.resume(GROUP, VERSION, SERVICES)
async def service_changed(body: kopf.Body, reason: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        await reconcile.reconcile(runtime(memo), _plain(body), str(reason))
    except PolicyNotFound as error:
        raise kopf.TemporaryError(str(error), delay=POLICY_RETRY_S) from None
    except reconcile.PlanningFailed as error:  # in status and an Event already; retried at a bounded rate
        RECONCILE_ERRORS.labels(stage="plan").inc()
        raise kopf.TemporaryError(str(error), delay=reconcile.PLANNING_RETRY_S) from None
    except Exception:
        RECONCILE_ERRORS.labels(stage="reconcile").inc()
        raise


@kopf.on.delete(GROUP, VERSION, SERVICES, optional=True)
def service_deleted(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime(memo).forget((namespace, name))


@kopf.on.create(GROUP, VERSION, POLICIES)
@kopf.on.update(GROUP, VERSION, POLICIES, field="spec")
@kopf.on.resume(GROUP, VERSION, POLICIES)
async def policy_changed(
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    reason: str,
    memo: kopf.Memo,
    services_by_policy: kopf.Index,
    **_: Any,
) -> None:
    rt = runtime(memo)
    try:
        policy = SLOPolicySpec.model_validate(copy.deepcopy(dict(spec)))
    except ValidationError as error:
        # The API server's schema admits little the model refuses; what it does is reported, not retried.
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        await reconcile.write_policy_status(rt, name, dict(status), meta.get("generation"), problem)
        raise kopf.PermanentError(f"SLOPolicy {name} is invalid: {problem}") from error
    rt.set_policy(name, policy)
    await reconcile.write_policy_status(rt, name, dict(status), meta.get("generation"), None)
    if str(reason) == "resume":
        return  # services resume on their own; nothing about the policy changed
    # A new policy matters to the services that were waiting for it; an edit to every user of it.
    await _replan_users(rt, name, services_by_policy, only_waiting=str(reason) == "create")


@kopf.on.delete(GROUP, VERSION, POLICIES, optional=True)
async def policy_deleted(name: str, memo: kopf.Memo, services_by_policy: kopf.Index, **_: Any) -> None:
    rt = runtime(memo)
    rt.drop_policy(name)
    if name == DEFAULT_POLICY_NAME:
        await _replan_users(rt, name, services_by_policy)  # the built-in default applies now


async def _replan_users(rt: Runtime, policy: str, index: kopf.Index, only_waiting: bool = False) -> None:
    """Re-plan the services that reference `policy`; one failure does not stop the others."""
    for namespace, name in list(index.get(policy, [])):
        record = rt.services.get((namespace, name))
        if only_waiting and record is not None and record.plan is not None:
            continue
        try:
            body = await rt.kube.get("InferenceService", namespace, name)
            await reconcile.reconcile(rt, body, "policy")
        except Exception:
            RECONCILE_ERRORS.labels(stage="policy").inc()
            log.exception("re-planning %s/%s after SLOPolicy %s changed failed", namespace, name, policy)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))
