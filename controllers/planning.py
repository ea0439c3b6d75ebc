"""The planner, memoized per operator process, and the decision calls made off the event loop.

`policies.planner.plan` is a pure function taking tenths of a second; the autoscaler quantizes the load it plans
for (rates on a 5 % grid, token mixes to two significant digits), so services at a steady load, and services
with the same spec at similar loads, ask for the same plan again and again. The cache key is the exact input
(spec, policy, load samples, calibration factors), so a hit returns exactly what a call would: the decisions
are the policies', only computed once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from controllers.metrics import POLICY_CPU
from crds.inferenceservice import InferenceServiceSpec
from crds.slopolicy import SLOPolicySpec
from policies import planner
from policies.types import Load, PlanResult

T = TypeVar("T")
CACHE_SIZE = 4096


class PlanCache:
    """A bounded LRU of planner results keyed by a digest of the exact inputs."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._results: OrderedDict[bytes, PlanResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(spec: InferenceServiceSpec, load: Load, policy: SLOPolicySpec, ttft: float, tpot: float) -> bytes:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(spec.model_dump_json().encode())
        digest.update(policy.model_dump_json().encode())
        digest.update(repr((load.rps, load.batch_fraction, ttft, tpot)).encode())
        digest.update(load.prompt_tokens.tobytes())
        digest.update(load.output_tokens.tobytes())
        return digest.digest()

    def __call__(
        self, spec: InferenceServiceSpec, load: Load, policy: SLOPolicySpec, ttft: float, tpot: float
    ) -> PlanResult:
        key = self.key(spec, load, policy, ttft, tpot)
        found = self._results.get(key)
        if found is not None:
            self._results.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        result = planner.plan(spec, load, policy, ttft, tpot)
        self._results[key] = result
        if len(self._results) > self.size:
            self._results.popitem(last=False)
        return result


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
