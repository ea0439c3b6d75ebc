"""A real Prometheus on loopback for tests and benchmarks: the one launcher they share.

Debian's `prometheus` binary by default (no Kubernetes discovery: targets are static), or any other binary,
such as the Prometheus 3 that e2e/build.py builds. The e2e stack runs its own, which discovers pods.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

BINARY = "prometheus"


def available() -> bool:
    return shutil.which(BINARY) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config(targets: list[str], scrape_interval_s: float) -> dict[str, Any]:
    """Scrape static targets every `scrape_interval_s`, keeping the labels they export (as relabeling would)."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "goodput-workers",
                "honor_labels": True,
                "scrape_timeout": interval,
                "static_configs": [{"targets": targets}],
            }
        ],
    }


class PrometheusProcess:
    """Prometheus with `config` (default: scrape `targets`); `stop()` kills it, `start()` brings it back on its
    port. `directory` holds its config, data and log; a temporary one, removed by `close()`, when not given."""

    def __init__(
        self,
        targets: list[str] | None = None,
        scrape_interval_s: float = 1.0,
        *,
        config: dict[str, Any] | None = None,
        binary: str = BINARY,
        directory: Path | None = None,
    ) -> None:
        if (targets is None) == (config is None):
            raise ValueError("give either targets or a config")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._owns_dir = directory is None
        self._dir = Path(tempfile.mkdtemp(prefix="goodput-prometheus-")) if directory is None else directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        wanted = scrape_config(targets or [], scrape_interval_s) if config is None else config
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(wanted, sort_keys=False))

    @property
    def log(self) -> Path:
        return self._dir / "prometheus.log"

    def start(self, timeout_s: float = 30.0) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            cwd=self._dir,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus was not ready within {timeout_s} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running(binary: str, directory: Path, config: dict[str, Any]) -> Iterator[str]:
    """`binary` with `config` in `directory`, ready; yields its URL and stops it on exit."""
    process = PrometheusProcess(config=config, binary=binary, directory=directory)
    process.start()
    try:
        yield process.url
    finally:
        process.close()
