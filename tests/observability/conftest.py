"""Fixtures for the observability tests: the generator module (manifests/ is no package) and a real Prometheus."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml

from e2e import build, procs

GENERATOR = Path(__file__).resolve().parents[2] / "manifests" / "observability" / "generate.py"


@pytest.fixture(scope="session")
def observability() -> ModuleType:
    spec = importlib.util.spec_from_file_location("goodput_observability", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


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
def prometheus(
    request: pytest.FixtureRequest, observability: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus on loopback with goodput's rules loaded and nothing to scrape; yields its URL."""
    binary = prometheus_binary(request.param)
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(observability.RULES_FILE)]}))
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = procs.start(argv, directory / "prometheus.log", cwd=directory)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise procs.ProcessExited((directory / "prometheus.log").read_text()[-2000:])
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200

        procs.wait_until(ready, 30, "prometheus /-/ready")
        yield url
    finally:
        procs.stop(proc.pid, proc=proc)
