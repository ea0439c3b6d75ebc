"""Child processes of the local stack: start in their own session, stop by process group, free ports."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


class ProcessExited(RuntimeError):
    """A component died while we waited for it: waiting longer cannot help."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec hook: the kernel sends ``sig`` when the thread that started us exits (no orphans)."""

    def hook() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return hook


def start(
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    tied: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a session leader logging to ``log``.

    ``tied`` SIGKILLs it when its parent dies (the safety net; orderly stops go through :func:`stop`);
    the `up` CLI clears it so the stack outlives the command.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGKILL) if tied else None,
        )


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def mentions(pid: int, marker: str) -> bool:
    """True if ``pid``'s command line contains ``marker`` (so a recycled pid is never signalled)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line or working directory contains ``marker``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes().decode(errors="replace") + str((proc / "cwd").readlink())
        except OSError:
            continue
        if marker in text and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(pid: int, grace: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds, reap our child."""
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` (exceptions count as not yet) until true, else raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ProcessExited:
            raise
        except Exception as exc:  # the component is still starting
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))
