"""The goodput operator process: Kopf settings here, the handlers in controllers/.

Run as `kopf run -A operator/main.py` (all namespaces) or `kopf run -n team-a -n team-b operator/main.py`;
in a cluster, `python operator/main.py` does the same from environment variables (see `main`). Settings of
the operator itself (Prometheus URL, poll interval, window) come from GOODPUT_OPERATOR_* (controllers.config).

Standalone, not peering: the operator runs as a single replica with a `Recreate` Deployment strategy, so two
never overlap, and Kopf's peering (an extra CRD, cluster-wide RBAC on it, keep-alive writes) buys nothing.
A crashed pod is restarted by its Deployment; the shared poller and every decision resume from status.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import kopf

import controllers.handlers  # noqa: F401  (registers the handlers)

ANNOTATIONS_PREFIX = "goodput.dev"
LIVENESS = "http://0.0.0.0:8080/healthz"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Standalone: one replica (see the module docstring); no peering objects are read or written.
    settings.peering.standalone = True
    # The CRDs exist before the operator starts; no need to list CRDs and namespaces (least privilege).
    settings.scanning.disabled = True
    # Kopf's bookkeeping in annotations under our prefix, never in status (our schema prunes unknown fields).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATIONS_PREFIX}/finalizer"
    # Request timeouts and backoff: an API request fails after 30 s and is retried 1, 2, 5, 10, 20 s later.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = (1, 2, 5, 10, 20)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # A failing handler is retried after 10 s (Kopf's default is 60 s).
    settings.execution.default_backoff = 10
    # Events from Kopf itself only for warnings; the operator posts its own decision events.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "goodput-operator"
    # Graceful shutdown: exit within the pod's terminationGracePeriodSeconds (30 s).
    settings.process.ultimate_exiting_timeout = 25


def main() -> None:
    """`python operator/main.py`: namespaces from GOODPUT_OPERATOR_NAMESPACES (comma-separated; empty = all)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = [
        ns.strip() for ns in os.environ.get("GOODPUT_OPERATOR_NAMESPACES", "").split(",") if ns.strip()
    ]
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("GOODPUT_OPERATOR_LIVENESS", LIVENESS),
    )


if __name__ == "__main__":
    sys.exit(main())
