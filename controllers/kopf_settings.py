"""Kopf's settings for the goodput operator: one standalone replica, its bookkeeping in annotations, timeouts.

Standalone, not peering: the operator runs as a single replica with a `Recreate` Deployment strategy, so two
never overlap, and Kopf's peering (an extra CRD, cluster-wide RBAC on it, keep-alive writes) buys nothing.
"""

from __future__ import annotations

import logging

import kopf

ANNOTATIONS_PREFIX = "goodput.dev"


def apply(settings: kopf.OperatorSettings) -> None:
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
