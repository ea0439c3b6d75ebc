"""Rank 0's handle on the other tensor-parallel ranks: spawn them, send each step's batch down a pipe (a
pipe, not a collective, so an idle follower never times out), watch them, stop them. A watchdog notices
dead children, and a follower exits when rank 0 is gone, so a lost rank is an error, not a hang."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import torch.multiprocessing as mp

from goodput.worker_image.parallel import RankFailedError

if TYPE_CHECKING:
    from goodput.worker_image.config import EngineConfig

log = logging.getLogger(__name__)


class Followers:
    """Rank 0's handle on ranks 1..N-1: spawn them, send them steps, watch them, and stop them."""

    def __init__(self, target: Callable[..., None], config: EngineConfig, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.failure: str | None = None
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for r in range(1, config.tensor_parallel_size):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=target, args=(config, r, port, theirs), name=f"goodput-tp{r}", daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)
        self._stopping = False
        self._watchdog = threading.Thread(target=self._watch, name="goodput-tp-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        sentinels = {p.sentinel: p for p in self.procs}
        dead = [sentinels[s] for s in wait(list(sentinels))]
        for p in dead:
            p.join(1.0)  # its sentinel closes a moment before it can be reaped
        if not self._stopping:
            self.failure = ", ".join(f"{p.name} exited with code {p.exitcode}" for p in dead)
            log.error("tensor-parallel rank lost: %s; stopping the other ranks", self.failure)
            self.kill()

    def wait(self, what: str) -> None:
        """Block until every follower reports `what`; one that dies first is an error naming it."""
        for proc, pipe in zip(self.procs, self.pipes, strict=True):
            try:
                pipe.recv()
            except EOFError:
                proc.join(1.0)
                raise RankFailedError(
                    f"tensor-parallel rank lost: {proc.name} exited with code {proc.exitcode} before {what}"
                ) from None

    def check(self) -> None:
        if self.failure is not None:
            raise RankFailedError(f"tensor-parallel rank lost: {self.failure}")

    def failed(self, exc: BaseException) -> RankFailedError:
        """After a failed step: name the rank that died, if one did (the watchdog wakes at once), then stop
        every rank."""
        self._watchdog.join(timeout=1.0)
        self._stopping = True
        self.kill()
        return RankFailedError(
            f"tensor-parallel step failed ({self.failure or 'a rank stopped answering'}): {exc}"
        )

    def send(self, message: object) -> None:
        self.check()
        try:
            for pipe in self.pipes:
                pipe.send(message)
        except OSError as exc:
            raise RankFailedError(f"tensor-parallel rank unreachable: {exc}") from exc

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every follower to leave, then kill any that did not within the timeout."""
        self._stopping = True
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for p in self.procs:
            p.join(timeout_s)
        self.kill()
        for p in self.procs:
            p.join()
        for pipe in self.pipes:
            pipe.close()


def watch_parent() -> None:
    """In a follower: exit as soon as rank 0 is gone, even if it was killed without a word."""
    parent = os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=loop, name="goodput-tp-parent", daemon=True).start()
