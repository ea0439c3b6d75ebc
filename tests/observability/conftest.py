"""Fixtures for the observability tests: the generator (observability/) and a real Prometheus."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from e2e import build
from observability import dashboard, monitors, output, rules, slis
from testkit.prometheus import running


@pytest.fixture(scope="session")
def observability() -> SimpleNamespace:
    """The generator's public names (observability's modules), as the tests read them."""
    names: dict[str, Any] = {}
    for module in (slis, rules, monitors, dashboard, output):
        names |= {name: value for name, value in vars(module).items() if not name.startswith("_")}
    return SimpleNamespace(**names)


def need(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        pytest.skip(f"{binary} is not installed (Debian package prometheus; `make system-deps`)")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return need("promtool")


def prometheus_binary(kind: str) -> str:
    """Debian's Prometheus 2, or the Prometheus 3 that e2e/build.py builds (skipped until it is built)."""
    if kind == "debian":
        return need("prometheus")
    built = next(t.path for t in build.targets() if t.name == "prometheus")
    if not built.exists():
        pytest.skip(f"{built} not built yet (`python -m e2e.build`)")
    return str(built)


@pytest.fixture(scope="module", params=["debian", "e2e-build"])
def prometheus_kind(request: pytest.FixtureRequest) -> str:
    """The binary of each Prometheus we support: Debian's 2.x and the 3.x the e2e stack builds."""
    return prometheus_binary(request.param)


@pytest.fixture(scope="module")
def prometheus(
    prometheus_kind: str, observability: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus with goodput's rules loaded and nothing to scrape; yields its URL."""
    config = {"rule_files": [str(observability.RULES_FILE)]}
    with running(prometheus_kind, tmp_path_factory.mktemp("prometheus"), config) as url:
        yield url


@pytest.fixture(scope="module")
def launch(prometheus_kind: str) -> Callable[[Path, dict[str, Any]], contextlib.AbstractContextManager[str]]:
    """Start this module's Prometheus binary with a config of the test's own: `with launch(dir, cfg) as url`."""
    return functools.partial(running, prometheus_kind)
