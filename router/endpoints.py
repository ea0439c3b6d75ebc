"""The tiers' replicas from their Services' EndpointSlices: a list, then a watch, kept apart from the hot path.

Talks to the API server over plain HTTP with the pod's service account (no Kubernetes client library): the
router needs one read-only watch, and its image stays small. Only endpoints whose `ready` condition is not false
are routed to; a replica that is terminating leaves rotation as soon as its slice says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from goodput.router.dispatch import Tier

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PORT_NAME = "http"
RETRY_S = 2.0
log = logging.getLogger(__name__)


def ready_urls(slices: Iterable[dict[str, Any]], port_name: str = PORT_NAME) -> list[str]:
    """`http://address:port` of every ready endpoint, in a stable order."""
    urls: set[str] = set()
    for slice_ in slices:
        ports = [p for p in slice_.get("ports") or [] if p.get("name") == port_name and p.get("port")]
        if not ports:
            continue
        port = ports[0]["port"]
        for endpoint in slice_.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                urls.add(f"http://{host}:{port}")
    return sorted(urls)


class InCluster:
    """The API server as seen from a pod."""

    def __init__(self) -> None:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        host = f"[{host}]" if ":" in host else host
        self.server = f"https://{host}:{port}"
        self.ssl = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))

    def headers(self) -> dict[str, str]:
        """The token is re-read each time: the kubelet rotates it."""
        return {"Authorization": "Bearer " + (SERVICE_ACCOUNT / "token").read_text().strip()}


async def watch_tier(
    session: aiohttp.ClientSession, api: InCluster, namespace: str, service: str, tier: Tier
) -> None:
    """Keep `tier`'s endpoints equal to the Service's ready endpoints, forever (relisting after any error)."""
    path = f"{api.server}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    selector = {"labelSelector": f"{SERVICE_NAME_LABEL}={service}"}
    while True:
        try:
            async with session.get(path, params=selector, headers=api.headers(), ssl=api.ssl) as r:
                r.raise_for_status()
                listed = await r.json()
            slices = {s["metadata"]["name"]: s for s in listed.get("items", [])}
            tier.set_endpoints(ready_urls(slices.values()))
            params = {**selector, "watch": "1", "resourceVersion": listed["metadata"]["resourceVersion"]}
            async with session.get(
                path, params=params, headers=api.headers(), ssl=api.ssl, timeout=aiohttp.ClientTimeout(None)
            ) as r:
                r.raise_for_status()
                async for line in r.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # resourceVersion too old: relist
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        slices.pop(obj["metadata"]["name"], None)
                    else:
                        slices[obj["metadata"]["name"]] = obj
                    tier.set_endpoints(ready_urls(slices.values()))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
            log.warning("EndpointSlice watch of %s/%s: %s; relisting", namespace, service, error)
        await asyncio.sleep(RETRY_S)
