"""An in-memory Kubernetes API for the operator's tests and benchmark: kmock's emulator, a little more real.

kmock's `KubernetesEmulator` stores objects and serves list/watch/get/patch. The real API server also does a
few things the operator relies on, added here: server-side apply creates absent objects; the status
subresource is the only way to write status (and the main resource ignores status); metadata.uid,
creationTimestamp, generation (bumped on spec changes) and resourceVersion; label selectors on lists; and,
optionally, an instant Deployment controller (readyReplicas follows spec.replicas). Objects keep only their
latest version and requests are not retained, so a thousand services stay cheap. Import only from tests and
benchmarks (kmock is a dev dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import itertools
import uuid
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import dicts, enums, k8s_views, rendering

from goodput.crds import inferenceservice, slopolicy
from goodput.crds.common import GROUP, VERSION

APPLY_PATCH = "application/apply-patch+yaml"


def _custom(kind: str, namespaced: bool, shortnames: tuple[str, ...] = ()) -> kmock.ResourceInfo:
    """One of goodput's custom resources, served with its status subresource as the CRD declares."""
    return kmock.ResourceInfo(
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
        shortnames=set(shortnames),
    )


RESOURCES: dict[str, kmock.ResourceInfo] = {
    f"{GROUP}/{VERSION}/{inferenceservice.PLURAL}": _custom(
        inferenceservice.KIND, True, inferenceservice.SHORT_NAMES
    ),
    f"{GROUP}/{VERSION}/{slopolicy.PLURAL}": _custom(slopolicy.KIND, False),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service", namespaced=True, verbs={"get", "list", "create", "patch"}
    ),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True, verbs={"get", "create", "patch"}),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"list", "create", "patch"}),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", namespaced=True, verbs={"get", "create", "patch"}
    ),
    # Discovered (never listed: scanning is off) so Kopf's backbone is complete, as on a real server.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"}
    ),
}
STATUS_SUBRESOURCE = {inferenceservice.PLURAL, slopolicy.PLURAL, "deployments"}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors (`a=b,c=d`, `a!=b`, `a`), which is all the operator sends."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the API server behaviours listed in the module docstring."""

    def __init__(self, *, deployment_controller: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deployment_controller = deployment_controller
        self._versions = itertools.count(1)
        for key, info in RESOURCES.items():
            self.resources[key] = info

    def _key(self, request: rendering.Request) -> k8s_views.ArrayKey:
        return (request.resource, request.namespace, request.name)

    def _stored(self, request: rendering.Request) -> dict[str, Any] | None:
        key = self._key(request)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def _prepare(self, request: rendering.Request) -> None:
        """Rewrite the request body in place the way the real API server would interpret it."""
        data = request.data
        if not isinstance(data, dict):
            return
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        plural = request.resource.plural
        if request.action == enums.action.CREATE:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
            if plural in STATUS_SUBRESOURCE and plural != "deployments":
                data.pop("status", None)
            self._control_deployment(plural, data)
            return
        stored = self._stored(request)
        if stored is None and request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
            stored = {
                "metadata": {
                    "name": request.name,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _now(),
                    "generation": 0,
                }
            }
            if request.namespace is not None:
                stored["metadata"]["namespace"] = request.namespace
            self.objects[self._key(request)] = stored
        if stored is None:
            return
        if request.subresource == "status":
            for key in list(data):
                if key not in ("status", "metadata"):
                    del data[key]
            data["metadata"] = {"resourceVersion": meta["resourceVersion"]}
            return
        if plural in STATUS_SUBRESOURCE and plural != "deployments":
            data.pop("status", None)
        if "spec" in data:
            merged = dicts.patch_dict(copy.deepcopy(stored.get("spec", {})), data["spec"])
            if merged != stored.get("spec"):
                meta["generation"] = stored["metadata"].get("generation", 0) + 1
        self._control_deployment(plural, data)

    def _control_deployment(self, plural: str | None, data: dict[str, Any]) -> None:
        if plural != "deployments" or not self._deployment_controller:
            return
        replicas = data.get("spec", {}).get("replicas")
        if replicas is not None:
            data["status"] = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action in (enums.action.CREATE, enums.action.UPDATE):
            self._prepare(request)
        try:
            return await super()._handle(request)
        finally:
            self._requests.clear()  # the base keeps every request for assertions; we keep objects only
            key = self._key(request)
            if request.name is not None and key in self.objects and not self.objects[key].deleted:
                self.objects[key].history = [self.objects[key].raw]

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        stored = self._stored(request)
        if stored is None:
            raise kmock.KubernetesObjectNotFoundError()
        return stored

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        answer = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            answer["items"] = [
                item
                for item in answer["items"]
                if _matches(item.get("metadata", {}).get("labels", {}), selector)
            ]
        return answer

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        return self.objects[self._key(request)].last.raw

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        meta = request.data.get("metadata", {})
        key = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        return self.objects[key].last.raw


async def serve(port: int) -> None:
    """Run the emulated API server on 127.0.0.1:`port` until cancelled (the benchmark's separate process)."""
    async with ApiServer() as api, kmock.Server(api, port=port):
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An emulated Kubernetes API server on loopback.")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
