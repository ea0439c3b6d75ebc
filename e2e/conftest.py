"""Fixtures for tests on the real local stack (mark them ``@pytest.mark.e2e``).

``cluster`` is session-scoped: one control plane, process kubelet and Prometheus for the whole run,
torn down (processes stopped, state dir removed) when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from e2e import build
from e2e.stack import Stack, running_stack


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """The running stack: ``.kubeconfig``, ``.server``, ``.prometheus_url``, ``.api_client()``."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # a first build takes minutes: show its progress
        build.ensure_binaries()
    with running_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
def k8s(cluster: Stack) -> Iterator[kubernetes.client.ApiClient]:
    """An admin client of the official `kubernetes` package for the session's stack."""
    with cluster.api_client() as client:
        yield client
