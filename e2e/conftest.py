"""Fixtures for tests on the real local stack (mark them ``@pytest.mark.e2e``).

``cluster`` is session-scoped: one control plane, node (kubelet, containerd, kube-proxy) and Prometheus for
the whole run, torn down when the session ends; the run then fails if any process, port, the state dir or any
host change (mounts, bridge, cgroups, rules, namespaces, sysctls) was left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from e2e import build, images
from e2e.stack import Stack, leftovers, running_stack

STARTED: list[Stack] = []


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """The running stack: ``.kubeconfig``, ``.server``, ``.prometheus_url``, ``.api_client()``."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # a first build takes minutes: show its progress
        build.ensure_binaries()
        images.ensure_all()
    with running_stack() as stack:
        STARTED.append(stack)
        yield stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``own_node`` run first, before the session's stack starts: a host holds one node at a time
    (containerd admits one daemon on its shared image store; kube-proxy's nftables table has a fixed name)."""
    items.sort(key=lambda item: item.get_closest_marker("own_node") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Session fixtures are torn down by now: fail the run if the stack left anything behind."""
    left = [item for stack in STARTED for item in leftovers(stack)]
    if left:
        print(f"\ne2e stack left behind: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def k8s(cluster: Stack) -> Iterator[kubernetes.client.ApiClient]:
    """An admin client of the official `kubernetes` package for the session's stack."""
    with cluster.api_client() as client:
        yield client
