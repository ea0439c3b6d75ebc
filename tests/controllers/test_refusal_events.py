"""A refused spec posts one Warning Event per distinct problem, even when two reconciles race on one body."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from goodput.controllers import reconcile
from goodput.controllers.config import OperatorConfig
from goodput.controllers.kube import KubeClient
from goodput.controllers.prometheus import PrometheusReader
from goodput.controllers.runtime import Runtime

NS = "team-a"
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


class RecordingKube:
    """Keeps the Events posted; every write yields to the loop, as a request to the API server does."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.events.append(obj)
        return obj


def _runtime(kube: RecordingKube) -> Runtime:
    return Runtime(
        config=OperatorConfig(), kube=cast(KubeClient, kube), prometheus=cast(PrometheusReader, None)
    )


def _body(source: str) -> dict[str, Any]:
    """The tiny example with a model the worker cannot load (a preset it lacks): refused before planning."""
    manifest = yaml.safe_load((EXAMPLES / "tiny-cpu.yaml").read_text())
    manifest["spec"]["model"]["source"] = source
    return {
        "metadata": {"namespace": NS, "name": "nopreset", "uid": "uid-1", "generation": 1},
        "spec": manifest["spec"],
        "status": {},
    }


def _warnings(kube: RecordingKube) -> list[str]:
    return [e["message"] for e in kube.events if e["type"] == "Warning"]


@pytest.mark.asyncio
async def test_two_reconciles_on_one_stale_body_post_one_warning() -> None:
    """kopf's create handler and a policy re-plan both read the body before either wrote its status."""
    kube = RecordingKube()
    rt = _runtime(kube)
    stale = _body("random:nonexistent")
    await asyncio.gather(reconcile.reconcile(rt, stale, "create"), reconcile.reconcile(rt, stale, "policy"))
    warnings = _warnings(kube)
    assert len(warnings) == 1 and warnings[0].startswith("spec.model.source: "), warnings


@pytest.mark.asyncio
async def test_a_different_problem_is_news_and_a_deleted_service_starts_afresh() -> None:
    kube = RecordingKube()
    rt = _runtime(kube)
    await reconcile.reconcile(rt, _body("random:nonexistent"), "create")
    await reconcile.reconcile(rt, _body("random:nonexistent"), "update")  # status not yet seen: no repeat
    assert len(_warnings(kube)) == 1
    await reconcile.reconcile(rt, _body("random:other"), "update")
    assert len(_warnings(kube)) == 2 and "'other'" in _warnings(kube)[1]
    rt.forget((NS, "nopreset"))
    await reconcile.reconcile(rt, _body("random:other"), "create")
    assert len(_warnings(kube)) == 3
