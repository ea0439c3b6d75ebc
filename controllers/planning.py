"""The planner, memoized per operator process, and the decision calls made off the event loop.

The cache is `policies.plancache.PlanCache`, the one the simulator replays with, so the operator plans exactly
as a benchmark did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from goodput.controllers.metrics import POLICY_CPU
from goodput.policies.plancache import PlanCache as PlanCache  # the operator's cache (controllers/runtime.py)

T = TypeVar("T")


async def policy_call(fn: Callable[..., T], *args: object) -> T:
    """Run a policy call on the event loop after yielding to it once, and count its CPU time.

    Inline, not in a worker thread: each call is milliseconds, and threads lost more to GIL hand-offs with the
    numpy work on the loop (observations) than they gained (measured with bench/operator_scale.py).
    """
    await asyncio.sleep(0)
    started = time.thread_time()
    try:
        return fn(*args)
    finally:
        POLICY_CPU.inc(time.thread_time() - started)
