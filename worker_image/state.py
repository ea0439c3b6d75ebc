"""What the handlers share: the server's settings, the engine thread once loaded, the metrics, draining."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine_thread import EngineRunner
from goodput.worker_image.errors import queue_full, unavailable
from goodput.worker_image.metrics import WorkerMetrics

logger = logging.getLogger("goodput.worker")


@dataclass(frozen=True)
class ServeOptions:
    """Server settings that are not engine arguments."""

    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    drain_timeout_s: float = 30.0
    served_model_name: str | None = None


class WorkerState:
    """The engine once loaded, the metrics, and whether the worker is draining."""

    def __init__(self, config: EngineConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self.created = int(time.time())
        self.metrics = WorkerMetrics(model_name, config.max_model_len)
        self.runner: EngineRunner | None = None
        self.load_error: BaseException | None = None
        self.draining = False

    @property
    def healthy(self) -> bool:
        return self.load_error is None and (self.runner is None or self.runner.error is None)

    @property
    def ready(self) -> bool:
        return self.runner is not None and self.healthy and not self.draining

    def loaded(self) -> EngineRunner:
        """The runner, for requests that only need the tokenizer: 503 while the model loads."""
        if self.runner is None:
            raise unavailable("the model is still loading", "loading")
        return self.runner

    def admit(self) -> EngineRunner:
        """The runner, if this worker takes new requests now (the runner re-checks its queue on submit)."""
        if self.draining:
            raise unavailable("the server is draining; retry on another replica", "draining")
        if self.runner is None:
            raise unavailable("the model is still loading", "loading")
        if self.runner.queue_full():
            raise queue_full(f"{self.config.max_waiting} requests waiting")
        return self.runner

    async def drain(self, timeout_s: float) -> None:
        """Stop admitting and wait for in-flight requests, at most `timeout_s`; abort what is left."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.runner is not None and self.runner.num_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.runner is not None and self.runner.num_in_flight:
            logger.warning("drain timeout: aborting %d in-flight requests", self.runner.num_in_flight)
            self.runner.abort_all()
