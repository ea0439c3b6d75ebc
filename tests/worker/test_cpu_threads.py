"""The default torch thread count follows the cgroup CPU quota (v1 and v2) and the affinity, and a busy host
is warned about at start (issue 17, item 9)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from goodput.worker_image import cpu
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.model_runner import ModelRunner

AFFINITY = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path) == 3
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_cpu_limit(tmp_path) is None


def test_default_threads_take_the_smallest_of_quota_affinity_and_torch(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpu.default_threads(torch_default=64, root=tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.default_threads(torch_default=64, root=tmp_path) == AFFINITY
    assert cpu.default_threads(torch_default=1, root=tmp_path) == 1


def test_busy_cpus_reads_load_and_runnable_tasks() -> None:
    assert cpu.busy_cpus("0.50 0.40 0.30 4/300 1234") == 3.0  # four runnable, ourselves not counted
    assert cpu.busy_cpus("2.75 1.00 0.50 1/300 1234") == 2.75


def test_oversubscription_warning() -> None:
    assert cpu.oversubscription(threads=2, host_cpus=4, busy=1.0) is None
    message = cpu.oversubscription(threads=2, host_cpus=2, busy=1.0)
    assert message is not None and "oversubscribed" in message and "--cpu-threads" in message


def test_the_engine_warns_at_start_on_a_busy_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cpu, "busy_cpus", lambda: float(os.cpu_count() or 1))
    with caplog.at_level(logging.WARNING, logger=cpu.log.name):
        ModelRunner(EngineConfig(model="random:tiny", max_model_len=64, cpu_threads=1))
    assert any("oversubscribed" in r.getMessage() for r in caplog.records)
