"""How many torch threads the worker uses on CPU, and whether the host is too busy for them.

The default is the CPUs this process may run on (its affinity), capped by its cgroup CPU quota (a pod's CPU
limit: `cpu.max` under cgroup v2, `cpu.cfs_quota_us`/`cpu.cfs_period_us` under v1, rounded down, at least
one) and by torch's own default (the physical cores). More threads than the quota allows get throttled in
every period, and decode steps then stall for the rest of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Whole CPUs of the cgroup quota (v2, then v1), or None when unlimited or unreadable."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return max(1, int(quota) // int(period))
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        quota_text, period_text = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota_text is not None and period_text is not None:
            quota, period = int(quota_text), int(period_text)
            return None if quota <= 0 or period <= 0 else max(1, quota // period)
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup quota."""
    allowed = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    return allowed if limit is None else min(allowed, limit)


def default_threads(torch_default: int, root: Path = CGROUP_ROOT) -> int:
    return max(1, min(torch_default, available_cpus(root)))


def busy_cpus(loadavg: str | None = None) -> float:
    """CPUs other tasks keep busy now: the larger of the 1-minute load average and the runnable tasks
    (from /proc/loadavg, this process's own thread not counted)."""
    text = loadavg if loadavg is not None else _read(Path("/proc/loadavg")) or ""
    fields = text.split()
    if len(fields) < 4:
        return os.getloadavg()[0]
    runnable = int(fields[3].split("/")[0]) - 1
    return max(float(fields[0]), float(runnable))


def oversubscription(threads: int, host_cpus: int, busy: float) -> str | None:
    """A warning when the host lacks `threads` idle CPUs; None when it has them."""
    if busy + threads <= host_cpus:
        return None
    return (
        f"the host is oversubscribed: about {busy:.1f} of its {host_cpus} CPUs are busy and torch will use "
        f"{threads} threads; decode latency will suffer (fewer --cpu-threads, or a less busy node, helps)"
    )


def warn_if_oversubscribed(threads: int) -> None:
    message = oversubscription(threads, os.cpu_count() or 1, busy_cpus())
    if message is not None:
        log.warning(message)
