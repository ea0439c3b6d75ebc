"""Step-by-step discrete-event simulation of one replica's engine under Poisson arrivals.

The reference `policies.latency.ReplicaPredictor` is held to (tests, bench/latency_fidelity.py): the same
continuous batching, chunked prefill and batch window, one engine step at a time.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from goodput.policies.perfmodel import StepModel


@dataclass(frozen=True)
class SimResult:
    ttft: np.ndarray  # seconds, per request
    step_durations: np.ndarray  # seconds, per decoding step
    step_decodes: np.ndarray  # tokens decoded in that step (the weight of its duration in the ITL histogram)

    def ttft_quantile(self, q: float) -> float:
        return float(np.quantile(self.ttft, q))

    def tpot_quantile(self, q: float) -> float:
        order = np.argsort(self.step_durations)
        cdf = np.cumsum(self.step_decodes[order]) / self.step_decodes.sum()
        return float(self.step_durations[order][min(np.searchsorted(cdf, q), len(cdf) - 1)])


def simulate_replica(
    model: StepModel,
    rps: float,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    max_batch: int,
    batch_window_s: float,
    chunk_tokens: int,
    requests: int = 4000,
    seed: int = 0,
    warmup: float = 0.1,
) -> SimResult:
    """Step-by-step discrete-event simulation of one replica; same seed, same arrivals and lengths (CRN).

    The first `warmup` share of requests is left out of the statistics so the empty start does not flatter
    the tails.
    """
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0, requests)) / rps
    pick = rng.integers(0, len(prompt_tokens), requests)
    prompts = np.maximum(np.asarray(prompt_tokens)[pick].astype(int), 1)
    outputs = np.maximum(np.asarray(output_tokens)[pick].astype(int), 1)
    step_time = model.step_time

    ttft = np.full(requests, np.nan)
    durations: list[float] = []
    ends: list[float] = []
    decodes: list[int] = []
    waiting: deque[int] = deque()
    prefilling: deque[list[int]] = deque()  # [request, prompt tokens left]
    running: list[tuple[int, int]] = []  # heap of (step of its last token, context to free)
    now, step, next_arrival, done, kv = 0.0, 0, 0, 0, 0
    while done < requests:
        while next_arrival < requests and arrivals[next_arrival] <= now:
            waiting.append(next_arrival)
            next_arrival += 1
        if waiting and now - arrivals[waiting[0]] >= batch_window_s - 1e-12:
            while waiting and len(running) + len(prefilling) < max_batch:
                i = waiting.popleft()
                prefilling.append([i, int(prompts[i])])
        if not running and not prefilling:
            eligible = arrivals[waiting[0]] + batch_window_s if waiting else math.inf
            now = max(now, min(arrivals[next_arrival] if next_arrival < requests else math.inf, eligible))
            continue
        budget, chunk, finished_prefill = chunk_tokens, 0, []
        first, left = prefilling[0] if prefilling else (0, 0)
        context = float(prompts[first] - left) + min(budget, left) / 2  # tokens a prefill token attends to
        for entry in prefilling:
            take = min(budget, entry[1])
            entry[1] -= take
            budget -= take
            chunk += take
            if entry[1] == 0:
                finished_prefill.append(entry[0])
            if budget == 0:
                break
        n = len(running)
        duration = float(step_time(n, chunk, kv, context))
        now += duration
        step += 1
        kv += n + chunk
        if n:
            durations.append(duration)
            decodes.append(n)
            ends.append(now)
        while running and running[0][0] <= step:
            kv -= heapq.heappop(running)[1]
            done += 1
        for i in finished_prefill:
            prefilling.popleft()
            ttft[i] = now - arrivals[i]
            if outputs[i] == 1:
                kv -= int(prompts[i])
                done += 1
            else:
                heapq.heappush(running, (step + int(outputs[i]) - 1, int(prompts[i] + outputs[i] - 1)))
    skip = int(warmup * requests)
    first_step = int(np.searchsorted(np.asarray(ends), arrivals[skip]))
    return SimResult(
        ttft=ttft[skip:],
        step_durations=np.asarray(durations[first_step:]),
        step_decodes=np.asarray(decodes[first_step:], dtype=float),
    )
