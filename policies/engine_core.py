"""The simulator's engine step loop for one replica, compiled with numba: the same scheduling as the worker's
engine (vLLM-style continuous batching with chunked prefill), at compiled speed.

A replay of an hour at 100 requests/s takes millions of engine steps per simulation and a comparison runs
dozens of simulations; interpreted, each step cost microseconds of list handling. The state lives in arrays
so the loop compiles (nopython mode):

- `st` (int64): HEAD, PULLED, TAIL index the replica's queue of routed request ids (waiting = queue[HEAD:PULLED],
  routed but not yet arrived at the replica's clock = queue[PULLED:TAIL]); N_RUN running sequences; KV_USED
  tokens of KV cache they hold.
- `run` (int64, one row per running sequence in admission order): request id, prompt tokens left to prefill,
  output tokens left, context tokens, and the prefill tokens taken in the current step.
- `prefill`: tokens each request computes when admitted (its prompt, less a prefix cached on its replica).
- `prof`: the step cost's coefficients (`policies.perfmodel.step_seconds`, the formula the performance model
  evaluates, compiled here) followed by the KV capacity in tokens; `cfg`: max batch, batch window, chunk tokens.

Outcomes are written in place: first-token and finish times per request, the ids in the order their events
happened (`first_log`, `fin_log`, counted by `cursor`), and the inter-token latency histogram's per-bucket
weights, exactly as the interpreted loop filled them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from goodput.policies.perfmodel import (
    ATTENTION,
    COST_TERMS,
    DECODE_COMPUTE,
    DECODE_SERIAL,
    KV_TOKEN,
    OVERHEAD,
    WEIGHTS,
    step_seconds,
)

HEAD, PULLED, TAIL, N_RUN, KV_USED = 0, 1, 2, 3, 4
RID, PREFILL_LEFT, OUT_LEFT, CONTEXT, TAKE = 0, 1, 2, 3, 4
KV_CAPACITY = COST_TERMS
_step_seconds = njit(cache=True)(step_seconds)
MAX_BATCH, BATCH_WINDOW, CHUNK = 0, 1, 2


@njit(cache=True)
def _pull(st: np.ndarray, queue: np.ndarray, arrival: np.ndarray, until: float) -> None:
    while st[PULLED] < st[TAIL] and arrival[queue[st[PULLED]]] <= until:
        st[PULLED] += 1


@njit(cache=True)
def _admissible(
    st: np.ndarray,
    queue: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    prof: np.ndarray,
    max_batch: int,
) -> bool:
    """A waiting request may join: a batch slot is free and its KV fits (or the replica is empty)."""
    if st[HEAD] == st[PULLED] or st[N_RUN] >= max_batch:
        return False
    rid = queue[st[HEAD]]
    return st[N_RUN] == 0 or st[KV_USED] + prompt[rid] + output[rid] <= prof[KV_CAPACITY]


@njit(cache=True)
def _bucket(edges: np.ndarray, value: float) -> int:
    """The first bucket whose upper bound is >= value (Prometheus `le`; edges end with +Inf)."""
    i = 0
    while value > edges[i]:
        i += 1
    return i


@njit(cache=True)
def _finish(rid: int, t: float, st: np.ndarray, prompt: np.ndarray, output: np.ndarray, finish: np.ndarray,
            fin_log: np.ndarray, cursor: np.ndarray) -> None:  # fmt: skip
    finish[rid] = t
    fin_log[cursor[1]] = rid
    cursor[1] += 1
    st[KV_USED] -= prompt[rid] + output[rid]


@njit(cache=True)
def _compact(st: np.ndarray, run: np.ndarray) -> None:
    """Drop finished sequences (no output left), keeping the others in admission order."""
    kept = 0
    for i in range(st[N_RUN]):
        if run[i, OUT_LEFT] > 0:
            if kept != i:
                run[kept, :] = run[i, :]
            kept += 1
    st[N_RUN] = kept


@njit(cache=True)
def _elapsed(n: int, base: float, a0: float, a1: float, b0: float, b1: float) -> float:
    """Time of n steps, step j taking base + max(a0 + a1·j, b0 + b1·j): the larger line first, then the other."""
    if a0 < b0 or (a0 == b0 and a1 < b1):
        a0, a1, b0, b1 = b0, b1, a0, a1
    lead = n if a1 >= b1 else int(min(float(n), math.floor((a0 - b0) / (b1 - a1)) + 1.0))
    return (
        n * base
        + lead * a0
        + a1 * lead * (lead - 1) / 2
        + (n - lead) * b0
        + b1 * (n * (n - 1) - lead * (lead - 1)) / 2
    )


@njit(cache=True)
def _decode_run(t: float, t_end: float, st: np.ndarray, queue: np.ndarray, run: np.ndarray,
                arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, prof: np.ndarray,
                finish: np.ndarray, fin_log: np.ndarray, cursor: np.ndarray, itl_edges: np.ndarray,
                itl_weights: np.ndarray) -> float:  # fmt: skip
    """Steps with the same batch until the first completion, the next arrival or t_end, in closed form.

    Step j of the run is `step_seconds` of b decodes over a context grown by b·j: both sides of its roofline
    (memory, compute) are linear in j, so the time of n steps has a closed form.
    """
    b = st[N_RUN]
    ctx0 = 0
    k = run[0, OUT_LEFT]
    for i in range(b):
        ctx0 += run[i, CONTEXT]
        k = min(k, run[i, OUT_LEFT])
    stop = t_end if st[PULLED] == st[TAIL] else min(t_end, arrival[queue[st[PULLED]]])
    base = prof[OVERHEAD] + prof[DECODE_SERIAL] * b
    mem0, mem1 = prof[WEIGHTS] + prof[KV_TOKEN] * ctx0, prof[KV_TOKEN] * b
    comp0, comp1 = prof[DECODE_COMPUTE] * b + prof[ATTENTION] * ctx0, prof[ATTENTION] * b
    # steps start while the clock is before `stop`; at least one runs
    lo, hi = 1, k
    budget = stop - t
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _elapsed(mid - 1, base, mem0, mem1, comp0, comp1) < budget:
            lo = mid
        else:
            hi = mid - 1
    n = lo
    took = _elapsed(n, base, mem0, mem1, comp0, comp1)
    itl_weights[_bucket(itl_edges, took / n)] += b * n
    t += took
    for i in range(b):
        run[i, OUT_LEFT] -= n
        run[i, CONTEXT] += n
        if run[i, OUT_LEFT] == 0:
            _finish(run[i, RID], t, st, prompt, output, finish, fin_log, cursor)
    _compact(st, run)
    return t


@njit(cache=True)
def advance(t: float, t_end: float, st: np.ndarray, queue: np.ndarray, run: np.ndarray, arrival: np.ndarray,
            prompt: np.ndarray, prefill: np.ndarray, output: np.ndarray, prof: np.ndarray, cfg: np.ndarray,
            first_token: np.ndarray, finish: np.ndarray, first_log: np.ndarray, fin_log: np.ndarray,
            cursor: np.ndarray, itl_edges: np.ndarray, itl_weights: np.ndarray) -> float:  # fmt: skip
    """Run the replica until its clock reaches t_end (its last step may end a little later); its new clock."""
    max_batch, window, chunk = int(cfg[MAX_BATCH]), cfg[BATCH_WINDOW], int(cfg[CHUNK])
    while t < t_end:
        _pull(st, queue, arrival, t)
        if st[N_RUN] == 0:
            if st[HEAD] == st[TAIL]:
                return t_end
            # idle: the engine starts a step one batch window after the first arrival
            start = max(t, arrival[queue[st[HEAD]]] + window)
            if start >= t_end:
                return t_end if st[HEAD] == st[PULLED] else t
            t = start
            _pull(st, queue, arrival, t)
        n_dec, n_pre, ctx = 0, 0, 0
        for i in range(st[N_RUN]):
            run[i, TAKE] = 0
            if run[i, PREFILL_LEFT] == 0:
                n_dec += 1
                ctx += run[i, CONTEXT]
            else:
                n_pre += 1
        budget = max(chunk - n_dec, 0)
        if n_pre == 0 and (budget == 0 or not _admissible(st, queue, prompt, output, prof, max_batch)):
            t = _decode_run(t, t_end, st, queue, run, arrival, prompt, output, prof, finish, fin_log, cursor,
                            itl_edges, itl_weights)  # fmt: skip
            continue
        # vLLM's scheduler: partial prefills continue first, then waiting requests join while budget lasts.
        # Each prefill token attends to the prompt before it (a cached prefix included) and half its own chunk.
        tokens, attended = 0, 0.0
        for i in range(st[N_RUN]):
            if run[i, PREFILL_LEFT] > 0:
                take = min(run[i, PREFILL_LEFT], budget)
                budget -= take
                tokens += take
                run[i, TAKE] = take
                attended += take * (prompt[run[i, RID]] - run[i, PREFILL_LEFT] + take / 2.0)
        while budget > 0 and _admissible(st, queue, prompt, output, prof, max_batch):
            rid = queue[st[HEAD]]
            st[HEAD] += 1
            st[KV_USED] += prompt[rid] + output[rid]
            row = st[N_RUN]
            st[N_RUN] += 1
            take = min(prefill[rid], budget)
            run[row, RID], run[row, PREFILL_LEFT], run[row, OUT_LEFT] = rid, prefill[rid], output[rid]
            run[row, CONTEXT], run[row, TAKE] = 0, take
            budget -= take
            tokens += take
            attended += take * (prompt[rid] - prefill[rid] + take / 2.0)
        d = _step_seconds(prof, n_dec, tokens, ctx, attended)
        t += d
        if n_dec:
            itl_weights[_bucket(itl_edges, d)] += n_dec
        for i in range(st[N_RUN]):
            rid = run[i, RID]
            if run[i, PREFILL_LEFT] == 0:
                run[i, OUT_LEFT] -= 1
                run[i, CONTEXT] += 1
            else:
                take = run[i, TAKE]
                run[i, PREFILL_LEFT] -= take
                if take and run[i, PREFILL_LEFT] == 0:
                    first_token[rid] = t
                    first_log[cursor[0]] = rid
                    cursor[0] += 1
                    run[i, OUT_LEFT] -= 1
                    run[i, CONTEXT] = prompt[rid] + 1
            if run[i, OUT_LEFT] == 0:
                _finish(rid, t, st, prompt, output, finish, fin_log, cursor)
        _compact(st, run)
    return t
