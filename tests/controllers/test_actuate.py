"""Actuation against the emulated API server: idempotent server-side apply, pruning, status write skipping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio

from goodput.controllers import actuate
from goodput.controllers.kube import KubeClient
from goodput.controllers.runtime import ServiceRecord
from goodput.crds.inferenceservice import RouterSpec
from testkit.apiserver import ApiServer

NS = "team-a"


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[ApiServer, KubeClient]]:
    async with ApiServer() as server, kmock.Server(server) as http:
        client = KubeClient.connect(kopf.ConnectionInfo(server=str(http.url)), timeout_s=5, max_in_flight=4)
        try:
            yield server, client
        finally:
            await client.close()


def _record(example_spec: Any) -> ServiceRecord:
    return ServiceRecord(
        namespace=NS, name="tiny", uid="uid-1", generation=1, spec=example_spec("tiny-cpu.yaml")
    )


def _children(server: ApiServer) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for (resource, _, name), obj in server.objects.items():
        if not obj.deleted:
            raw = dict(obj.raw)
            raw["metadata"] = {k: v for k, v in raw["metadata"].items() if k != "resourceVersion"}
            out[(resource.plural, name)] = raw
    return out


@pytest.mark.asyncio
async def test_applying_twice_changes_nothing(api: Any, example_spec: Any, make_plan: Any) -> None:
    server, client = api
    plan = make_plan(tiers=(("interactive", 2, 32, 3.0), ("batch", 1, 128, 30.0)))
    first = _record(example_spec)
    assert await actuate.apply_plan(client, first, plan, set()) == 6
    before = _children(server)
    assert (
        await actuate.apply_plan(client, first, plan, {"interactive", "batch"}) == 0
    )  # nothing changed: no write at all
    restarted = _record(example_spec)  # a restarted operator re-asserts everything, to the same content
    assert await actuate.apply_plan(client, restarted, plan, {"interactive", "batch"}) == 6
    assert _children(server) == before


@pytest.mark.asyncio
async def test_a_dropped_tier_is_pruned(api: Any, example_spec: Any, make_plan: Any) -> None:
    server, client = api
    record = _record(example_spec)
    await actuate.apply_plan(
        client, record, make_plan(tiers=(("interactive", 2, 32, 3.0), ("batch", 1, 128, 30.0))), set()
    )
    assert ("deployments", "tiny-batch") in _children(server)
    written = await actuate.apply_plan(
        client, record, make_plan(tiers=(("interactive", 3, 32, 3.0),)), {"interactive", "batch"}
    )
    children = _children(server)
    assert written == 3  # the interactive Deployment, then the batch Deployment and Service deleted
    assert ("deployments", "tiny-batch") not in children
    assert ("services", "tiny-batch") not in children
    assert children[("deployments", "tiny-interactive")]["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("old", "new", "since_write", "due"),
    [
        ({"plan": {"replicas": 1}}, {"plan": {"replicas": 1}}, 1.0, False),
        ({"plan": {"replicas": 1}}, {"plan": {"replicas": 2}}, 1.0, True),
        ({"observed": {"rps": 1.0}}, {"observed": {"rps": 1.1}}, 1.0, False),
        ({"observed": {"rps": 1.0}}, {"observed": {"rps": 1.1}}, actuate.STATUS_REFRESH_S * 0.99, False),
        ({"observed": {"rps": 1.0}}, {"observed": {"rps": 1.1}}, actuate.STATUS_REFRESH_S * 2, True),
        ({"conditions": [{"status": "True"}]}, {"conditions": [{"status": "False"}]}, 1.0, True),
    ],
)
def test_status_writes_only_when_due(
    example_spec: Any, old: dict[str, Any], new: dict[str, Any], since_write: float, due: bool
) -> None:
    record = _record(example_spec)
    record.status, record.status_written_at = old, 1000.0
    assert actuate.status_due(record, new, 1000.0 + since_write) is due


@pytest.mark.asyncio
async def test_a_service_with_a_router_gets_its_children(api: Any, example_spec: Any, make_plan: Any) -> None:
    server, client = api
    record = _record(example_spec)
    record.spec = record.spec.model_copy(update={"router": RouterSpec()})
    plan = make_plan(tiers=(("interactive", 2, 32, 3.0),))
    assert await actuate.apply_plan(client, record, plan, set()) == 4 + 6  # the workers', the router's
    children = _children(server)
    assert children[("services", "tiny")]["spec"]["selector"] == {"goodput.dev/router": "tiny"}
    assert children[("deployments", "tiny-router")]["spec"]["replicas"] == 2
    for plural in ("serviceaccounts", "roles", "rolebindings", "poddisruptionbudgets"):
        assert (plural, "tiny-router") in children
    # a new plan leaves the router alone: it watches both tiers' Services whatever the plan
    assert (
        await actuate.apply_plan(client, record, make_plan(tiers=(("interactive", 3, 32, 3.0),)), set()) == 1
    )
