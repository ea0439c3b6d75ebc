"""Running the worker: uvicorn that drains on SIGTERM (stop admitting, finish in-flight, exit 0), and a
background-thread server for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from goodput.worker_image.app import create_app
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.state import ServeOptions, WorkerState

__all__ = ["DrainingServer", "ServeOptions", "WorkerState", "create_app", "serve", "serve_in_thread"]

logger = logging.getLogger("goodput.worker")


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains (not ready, 503 to new requests, finish in-flight)
    before exiting 0; a second signal exits at once."""

    def __init__(self, config: uvicorn.Config, state: WorkerState, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._drain_started = True
        logger.info("received %s: draining for up to %.0f s", signal.Signals(sig).name, self.drain_timeout_s)
        self.state.draining = True
        self._loop.call_soon_threadsafe(self._begin_drain)

    def fail(self, exc: BaseException) -> None:
        """The model could not load: exit non-zero."""
        self.exit_code = 1
        self.should_exit = True

    def _begin_drain(self) -> None:
        async def drain_then_exit() -> None:
            await self.state.drain(self.drain_timeout_s)
            self.should_exit = True

        self._drain_task = asyncio.ensure_future(drain_then_exit())


def serve(config: EngineConfig, options: ServeOptions) -> int:
    """Serve until drained after SIGTERM; the process exit code."""
    server: DrainingServer | None = None

    def on_fatal(exc: BaseException) -> None:
        if server is not None:
            server.fail(exc)

    app = create_app(config, options, on_fatal=on_fatal)
    uv_config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(uv_config, app.state.worker, options.drain_timeout_s)
    server.run()
    return server.exit_code


@contextlib.contextmanager
def serve_in_thread(
    config: EngineConfig, options: ServeOptions, ready_timeout_s: float = 120.0
) -> Iterator[tuple[str, WorkerState]]:
    """Run the server on a background thread (tests, benchmarks); yields its base URL once ready.
    Port 0 picks a free port. Signals stay with the caller: no drain on SIGTERM here."""
    app = create_app(config, options)
    state: WorkerState = app.state.worker
    server = uvicorn.Server(
        uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="goodput-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not (server.started and state.ready):
            if state.load_error is not None:
                raise RuntimeError(f"the model failed to load: {state.load_error}") from state.load_error
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}", state
    finally:
        server.should_exit = True
        thread.join(timeout=30)
