"""A small async Kubernetes client for what the operator writes: server-side apply, status, events, cleanup.

Kopf watches and patches its own bookkeeping; the operator's writes go through here, on the same credentials
(`kopf.ConnectionInfo`), with a request timeout and a bounded number of requests in flight. Like Kopf, the
client logs in again when the API server answers 401: the kubelet rotates projected service-account tokens
in place, and an operator that kept the first one would lose write access when it expires.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from goodput.controllers.naming import FIELD_MANAGER

APPLY = "application/apply-patch+yaml"  # JSON is YAML, so the body is plain JSON
MERGE = "application/merge-patch+json"

# kind → (API path prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "Event": ("/api/v1", "events", True),
    "Pod": ("/api/v1", "pods", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),  # the router's, with its Role and RoleBinding
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "InferenceService": ("/apis/goodput.dev/v1alpha1", "inferenceservices", True),
    "SLOPolicy": ("/apis/goodput.dev/v1alpha1", "slopolicies", False),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404


def path_of(kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced:
        if namespace is None:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        path += f"/namespaces/{quote(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


@dataclass
class KubeClient:
    """One aiohttp session to the API server; every method raises KubeError on a non-2xx answer.

    `relogin` returns fresh credentials (the operator passes its Kopf login handler); without it a 401 is final.
    """

    server: str
    session: aiohttp.ClientSession
    limit: asyncio.Semaphore
    auth: dict[str, str]
    relogin: Callable[[], kopf.ConnectionInfo | None] | None = None

    @classmethod
    def connect(
        cls,
        info: kopf.ConnectionInfo,
        timeout_s: float,
        max_in_flight: int,
        relogin: Callable[[], kopf.ConnectionInfo | None] | None = None,
    ) -> KubeClient:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_in_flight, ssl=info.as_ssl_context()),
            headers={"User-Agent": FIELD_MANAGER},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        return cls(
            server=info.server.rstrip("/"),
            session=session,
            limit=asyncio.Semaphore(max_in_flight),
            auth=info.as_http_headers(),
            relogin=relogin,
        )

    async def close(self) -> None:
        await self.session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        sent_with = self.auth
        status, reason, text = await self._send(method, path, data, content_type, params)
        if status == 401 and self._login_again(sent_with):
            status, reason, text = await self._send(method, path, data, content_type, params)
        if status >= 400:
            try:
                answer = json.loads(text)
                reason, message = answer.get("reason", ""), answer.get("message", text)
            except ValueError:
                message = text
            raise KubeError(status, reason, message)
        return json.loads(text) if text else {}

    async def _send(
        self, method: str, path: str, data: str | None, content_type: str, params: dict[str, str] | None
    ) -> tuple[int, str, str]:
        headers = {**self.auth, "Content-Type": content_type, "Accept": "application/json"}
        async with (
            self.limit,
            self.session.request(
                method, self.server + path, data=data, headers=headers, params=params
            ) as response,
        ):
            return response.status, response.reason or "", await response.text()

    def _login_again(self, rejected: dict[str, str]) -> bool:
        """New credentials after a 401, if the login yields any other than those just rejected.

        Concurrent requests that fail together log in once: a later one finds `auth` already replaced.
        """
        if self.auth is not rejected:
            return True
        info = self.relogin() if self.relogin is not None else None
        if info is None or info.as_http_headers() == rejected:
            return False
        self.auth = info.as_http_headers()
        return True

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager; creates the object when absent."""
        meta = obj["metadata"]
        path = path_of(obj["kind"], meta.get("namespace"), meta["name"])
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return await self._request("PATCH", path, body=obj, content_type=APPLY, params=params)

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource: the spec is never written."""
        path = path_of(kind, namespace, name, "status")
        await self._request("PATCH", path, body={"status": status}, content_type=MERGE)

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._request("GET", path_of(kind, namespace, name))

    async def list(self, kind: str, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
        answer = await self._request(
            "GET", path_of(kind, namespace), params={"labelSelector": label_selector}
        )
        return list(answer.get("items") or [])

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        try:
            await self._request("DELETE", path_of(kind, namespace, name))
        except KubeError as error:
            if not error.not_found:
                raise

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._request("POST", path_of(obj["kind"], meta.get("namespace")), body=obj)
