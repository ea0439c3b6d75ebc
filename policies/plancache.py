"""The planner, memoized: one cache for the operator and the simulator, so both plan exactly alike.

`policies.planner.plan` is a pure function taking tenths of a second; the autoscaler quantizes the load it plans
for (rates on a 5 % grid, token mixes to two significant digits), so services at a steady load, and services
with the same spec at similar loads, ask for the same plan again and again. Calibration factors are rounded to
FACTOR_DIGITS decimals before planning (a 0.5 % change in a correction factor moves no plan), so a factor that
drifts by EWMA noise does not turn every interval into a miss. The key is the rest of the input exactly (spec,
policy, load samples, rounded factors), so a hit returns what the call would: the decisions are the
policies', only computed once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.types import Load, PlanResult

CACHE_SIZE = 4096
FACTOR_DIGITS = 2


class PlanCache:
    """A bounded LRU of planner results keyed by a digest of the inputs, calibration factors rounded."""

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
        factors = (round(ttft, FACTOR_DIGITS), round(tpot, FACTOR_DIGITS))
        digest.update(repr((load.rps, load.batch_fraction, load.cached_prompt_fraction, *factors)).encode())
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
        result = planner.plan(spec, load, policy, round(ttft, FACTOR_DIGITS), round(tpot, FACTOR_DIGITS))
        self._results[key] = result
        if len(self._results) > self.size:
            self._results.popitem(last=False)
        return result
