"""Tail latency of one replica under Poisson arrivals: the queueing approximation the planner searches with.

The engine (both here and in worker_image/) runs continuous batching: every step decodes one token for each
running sequence and prefills up to `chunk_tokens` prompt tokens, first come first served. A waiting request
is admitted once a batch slot is free (at most `max_batch` sequences in flight) and the oldest waiting
request has waited `batch_window` (so prefills arriving together are batched). TTFT ends with the step that
prefills the last prompt token; TPOT is measured per output token (the inter-token latency histogram of the
metrics contract), so its p95 includes the steps slowed by other requests' prefill chunks.

`ReplicaPredictor` is what the planner uses: closed forms evaluated over a whole grid of (max batch, window,
rate) at once, fast enough to search every configuration each control interval. `policies.replica_sim` is a
discrete-event simulation of the same engine, step by step; tests hold the predictor to it.

Measured agreement (bench/latency_fidelity.py, 2 × 20 000 simulated requests): where the prefill chunk budget
is the busier resource, p95 TTFT within 9% and p95 TPOT within 2% at 30–90% utilisation. Where batch slots
bind (a small max batch, or a large model whose KV fits few sequences), TTFT is underestimated by ~20% at
60% slot occupancy and far more near saturation: the planner keeps slot occupancy at or below 50%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goodput.policies.perfmodel import StepModel

# Quantile levels for the token-length nodes, denser in the upper tail that p95 TTFT depends on: (from, to, nodes).
LEVEL_SEGMENTS = ((0.0, 0.8, 24), (0.8, 0.98, 24), (0.98, 1.0, 16))
CHUNK_NODES = 8
OCCUPANCY_ITERATIONS = 16


def tail_weighted_nodes(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantile nodes of `samples` and their probability weights, finer towards the maximum."""
    levels = np.concatenate([lo + (hi - lo) * (np.arange(k) + 0.5) / k for lo, hi, k in LEVEL_SEGMENTS])
    weights = np.concatenate([np.full(k, (hi - lo) / k) for lo, hi, k in LEVEL_SEGMENTS])
    return np.quantile(np.asarray(samples, dtype=float), levels), weights


def _weighted_pick(values: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """Indices of the entries at `count` evenly spaced weighted quantiles of `values`."""
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order]) / weights.sum()
    return order[np.minimum(np.searchsorted(cdf, (np.arange(count) + 0.5) / count), len(order) - 1)]


@dataclass(frozen=True)
class TokenStats:
    """What the approximation needs of the token-length distributions."""

    prompts: np.ndarray  # prompt-length quantile nodes
    weights: np.ndarray  # their probabilities (sum to 1)
    decode_tokens: float  # E[output − 1]: decode steps a request takes after its prefill step
    decode_context: float  # mean context of a decoding sequence, weighted by tokens decoded

    @classmethod
    def from_samples(cls, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> TokenStats:
        """Statistics of the two length distributions, taken as independent of each other.

        The metrics give the marginals only (two histograms, whose quantile nodes come sorted), so the model
        never pairs a prompt with an output: read as pairs, sorted nodes would put every long prompt with a long
        output and double the KV a decoding sequence holds. A trace's own samples are treated alike, so the
        planner predicts the same from a trace as from the histograms its requests fill.
        """
        p = np.maximum(np.asarray(prompt_tokens, dtype=float), 1.0)
        o = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)
        d = o - 1.0
        # a decoding sequence holds its prompt and, on average over its decode steps, half its output
        context = float(p.mean() + ((d * o / 2).sum() / d.sum() if d.sum() > 0 else 0.0))
        nodes, weights = tail_weighted_nodes(p)
        return cls(nodes, weights, float(d.mean()), context)


@dataclass(frozen=True)
class Prediction:
    """Predicted tails on a grid; axes (max_batch, window, rate) for TTFT, (max_batch, rate) otherwise."""

    ttft: np.ndarray  # seconds, at the requested quantile; inf where the replica is overloaded
    tpot: np.ndarray
    utilisation: np.ndarray  # of the busier resource: batch slots or the prefill chunk budget
    mean_batch: np.ndarray  # mean number of decoding sequences
    slot_occupancy: np.ndarray  # mean share of the max batch's slots taken


def _poisson_pmf(mean: np.ndarray, support: int) -> np.ndarray:
    """Poisson pmf over 0..support-1 for each mean (last axis appended)."""
    n = np.arange(support, dtype=float)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, support, dtype=float)))))
    m = np.maximum(mean, 1e-12)[..., None]
    return np.exp(n * np.log(m) - m - log_fact)


def _truncate(pmf: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Move the mass above `cap` (batch slots) onto `cap`: sequences beyond it wait instead of decoding."""
    n = np.arange(pmf.shape[-1])
    capb = cap[..., None]
    inside = np.where(n < capb, pmf, 0.0)
    return inside + np.where(n == capb, 1.0 - inside.sum(-1, keepdims=True), 0.0)


def _sum_tail(x: np.ndarray, pa: np.ndarray, ta: np.ndarray, pb: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """P(A + B > x), x ≥ 0, for independent A, B that are 0 or else exponential: A ~ pa·Exp(mean ta)."""
    ea, eb = np.exp(-x / ta), np.exp(-x / tb)
    close = np.abs(ta - tb) < 1e-6 * np.maximum(ta, tb)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        both = np.where(close, (1.0 + x / ta) * ea, (ta * ea - tb * eb) / (ta - tb))
    return pa * (1 - pb) * ea + pb * (1 - pa) * eb + pa * pb * both


class ReplicaPredictor:
    """Closed-form quantiles of TTFT and TPOT for one replica of one (model, accelerator, TP, chunk size).

    Decoding sequences: M/G/∞ occupancy (Poisson) capped at max batch, its mean from Little's law at the step
    time it implies (fixed point). TPOT: the step-time distribution seen by decoded tokens, mixing batch sizes
    (size-biased) and the share of steps that carry a prefill chunk. TTFT: waiting for the prefill chunk budget
    (M/G/1: Pollaczek–Khinchine and Takács moments, exponential tail) plus waiting for a batch slot (a
    birth–death chain whose service slows as the batch grows), plus the window, the end of the current step
    and the request's own chunked prefill, mixed over prompt lengths.
    """

    def __init__(self, model: StepModel, tokens: TokenStats, chunk_tokens: int, max_batch_cap: int) -> None:
        self.model, self.tokens, self.chunk = model, tokens, chunk_tokens
        support = max_batch_cap + 1
        n = np.arange(support, dtype=float)
        kv = n * tokens.decode_context
        p, w, c = tokens.prompts, tokens.weights, float(chunk_tokens)
        full, rest = np.floor(p / c), np.mod(p, c)
        # Every chunk of every prompt node (size, tokens it attends to, weight), reduced to a few by cost.
        counts = full.astype(int)
        sizes = np.concatenate([np.full(counts.sum(), c), rest[rest > 0]])
        contexts = np.concatenate(
            [
                np.concatenate([np.arange(k) * c + c / 2 for k in counts]),
                full[rest > 0] * c + rest[rest > 0] / 2,
            ]
        )
        chunk_w = np.concatenate([np.repeat(w, counts), w[rest > 0]])
        pick = _weighted_pick(np.asarray(model.step_time(0.0, sizes, 0.0, contexts)), chunk_w, CHUNK_NODES)
        self.decode_only = np.asarray(model.step_time(n, 0.0, kv))  # (support,)
        self.with_chunk = np.asarray(
            model.step_time(n[:, None], sizes[pick][None, :], kv[:, None], contexts[pick][None, :])
        )  # (support, CHUNK_NODES)
        # Own prefill time of each prompt node as a function of the decode batch it shares steps with, in
        # whole chunks (ceil) and packed (a backlog fills every step's budget).
        nb, kvb = n[None, :], kv[:, None].T
        ceil_full = model.step_time(nb, c, kvb, (full * c / 2)[:, None])
        ceil_rest = model.step_time(nb, rest[:, None], kvb, (full * c + rest / 2)[:, None])
        self.prefill = full[:, None] * ceil_full + ceil_rest  # (nodes, support)
        self.packed = (p / c)[:, None] * model.step_time(nb, c, kvb, (p / 2)[:, None])
        self._prefill_by_batch, self._packed_by_batch = self.prefill.T.copy(), self.packed.T.copy()
        self._own_mean, self._packed_mean = w @ self.prefill, w @ self.packed
        # A full chunk of a backlog, its prompt token attending to E[p²] / 2E[p] tokens (long prompts have more chunks).
        self.full_chunk = np.asarray(model.step_time(n, c, kv, float(w @ p**2) / (2 * float(w @ p))))
        table = np.concatenate([self.decode_only[:, None], self.with_chunk], axis=1).ravel()
        self._order = np.argsort(table, kind="stable")
        self._sorted = table[self._order]

    def _occupancy(self, lam: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fixed point: mean decoding sequences = rate · decode steps · mean step they see (Little's law).

        Returns the mean, the token-weighted batch-size distribution, the mean step a decoded token sees and
        the share of steps that carry a prefill chunk.
        """
        support = self.decode_only.shape[0]
        t, n = self.tokens, np.arange(support)
        chunk_mean = self.with_chunk.mean(axis=1)
        mean = lam * t.decode_tokens * self.decode_only[1]
        for _ in range(OCCUPANCY_ITERATIONS):
            pmf = _truncate(_poisson_pmf(mean, support), cap)
            token_w = pmf * n
            token_w /= np.maximum(token_w.sum(-1, keepdims=True), 1e-300)
            # The prefill queue is busy a share rho of the time; chunk steps last s_chunk, the rest s_decode,
            # so the share of steps with a chunk is rho·s_decode / (rho·s_decode + (1 − rho)·s_chunk).
            rho = self._prefill_rho(lam, mean)
            # A backlog fills every chunk to the budget; an idle queue leaves chunks at their own sizes.
            chunk_cost = (1 - rho)[..., None] * chunk_mean + rho[..., None] * self.full_chunk
            s_decode, s_chunk = pmf @ self.decode_only, (pmf * chunk_cost).sum(-1)
            chunk_share = rho * s_decode / np.maximum(rho * s_decode + (1 - rho) * s_chunk, 1e-300)
            decode_step = token_w @ self.decode_only
            seen = decode_step * (1 - chunk_share) + chunk_share * (token_w * chunk_cost).sum(-1)
            mean = np.minimum(lam * t.decode_tokens * seen, cap + 50.0)  # increasing map: climbs from below
        return np.minimum(mean, cap), token_w, seen, chunk_share

    def _prefill_rho(self, lam: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Utilisation of the prefill chunk budget. A last partial chunk wastes the rest of its step's budget
        unless another prompt waits (chance rho): work = packed + (own − packed)·(1 − rho) with
        rho = lam·E[work], solved in closed form."""
        n = np.arange(self.decode_only.shape[0])
        e_own, e_packed = np.interp(mean, n, self._own_mean), np.interp(mean, n, self._packed_mean)
        return np.minimum(lam * e_own / (1 + lam * (e_own - e_packed)), 1.0)

    def _prefill_load(self, lam: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each prompt node's own prefill time, and the moments of the work it adds to the chunk queue."""
        support = self.decode_only.shape[0]
        lo = np.minimum(np.floor(mean).astype(int), support - 1)
        hi = np.minimum(lo + 1, support - 1)
        frac = (mean - lo)[..., None]

        def at_mean(table: np.ndarray) -> np.ndarray:  # (support, ...) -> (..., ...)
            return table[lo] * (1 - frac) + table[hi] * frac

        w = self.tokens.weights
        own, packed = at_mean(self._prefill_by_batch), at_mean(self._packed_by_batch)
        rho = self._prefill_rho(lam, mean)[..., None]
        work = packed + (own - packed) * (1 - rho)
        return own, work @ w, work**2 @ w, work**3 @ w

    def _slot_wait(
        self,
        lam: np.ndarray,
        cap: np.ndarray,
        residence: np.ndarray,
        seen: np.ndarray,
        chunk_share: np.ndarray,
        mean: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(all batch slots taken) and the rate slots free then, from a birth–death chain on occupied slots.

        Slots free at k / residence(k), where residence grows with k because bigger batches step slower; this
        feedback is what makes a nearly full replica queue far more than a fixed-rate M/M/c would.
        """
        support = self.decode_only.shape[0]
        k = np.arange(1, support, dtype=float)
        decoding = np.minimum(mean / np.maximum(lam * residence, 1e-12), 1.0)[..., None]  # share of slots
        n = np.minimum(np.rint(k * decoding), support - 1).astype(int)
        q = chunk_share[..., None]
        step = (1 - q) * self.decode_only[n] + q * self.with_chunk.mean(-1)[n]
        base = (residence - self.tokens.decode_tokens * seen)[..., None]
        rate = k / (base + self.tokens.decode_tokens * step)  # (B, R, support - 1): completions/s at k slots
        inside = k <= cap[..., None]
        birth = np.log(np.maximum(lam, 1e-300))[..., None]
        log_pi = np.cumsum(np.where(inside, birth - np.log(rate), 0.0), -1)
        log_pi = np.concatenate([np.zeros((*lam.shape, 1)), log_pi], -1)  # states 0..support-1
        states = np.arange(support)
        drain = np.take_along_axis(rate, (cap - 1)[..., None], -1)[..., 0]
        rho_full = np.minimum(lam / drain, 1.0 - 1e-9)
        peak = log_pi.max(-1, keepdims=True)
        pi = np.where(states <= cap[..., None], np.exp(log_pi - peak), 0.0)
        at_cap = np.take_along_axis(pi, cap[..., None], -1)[..., 0]
        queued = at_cap * rho_full / (1 - rho_full)  # states above cap: geometric
        return (at_cap + queued) / (pi.sum(-1) + queued), drain

    def utilisation(self, rps: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        """Load on the busier resource, batch slots or the prefill chunk budget (1 = saturated)."""
        lam = np.asarray(rps, dtype=float)
        cap = np.broadcast_to(np.asarray(max_batch), lam.shape)
        mean, _, seen, _ = self._occupancy(lam, cap)
        own, ex, ex2, _ = self._prefill_load(lam, mean)
        return np.maximum(lam * self._residence(lam, own, ex, ex2, seen) / cap, lam * ex)

    def _residence(
        self, lam: np.ndarray, own: np.ndarray, ex: np.ndarray, ex2: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """Mean time a request holds a batch slot: queued for the chunk budget, prefilling, decoding."""
        queued = lam * ex2 / (2 * np.maximum(1 - lam * ex, 1e-9))
        return queued + own @ self.tokens.weights + self.tokens.decode_tokens * seen

    def saturation_rps(self, max_batch: np.ndarray) -> np.ndarray:
        """The rate at which a replica saturates (utilisation 1), per max batch."""
        return self.rate_at_utilisation(1.0, max_batch)

    def rate_upper_bound(self, max_batch: np.ndarray) -> np.ndarray:
        """A rate at which the replica is surely saturated: prefill alone, or full batches of the fastest step."""
        t = self.tokens
        b = np.asarray(max_batch, dtype=float)
        return np.minimum(
            1.0 / (t.weights @ self.packed[:, 0]), b / (max(t.decode_tokens, 1.0) * self.decode_only[1])
        )

    def rate_at_utilisation(self, target: float, max_batch: np.ndarray) -> np.ndarray:
        """The rate giving `target` utilisation, per max batch (bisection)."""
        b = np.asarray(max_batch, dtype=float)
        low = np.zeros_like(b)
        high = self.rate_upper_bound(b) * max(target, 1.0)
        for _ in range(24):
            mid = (low + high) / 2
            over = self.utilisation(mid, b) >= target
            low, high = np.where(over, low, mid), np.where(over, mid, high)
        return low

    def predict(
        self,
        rps: np.ndarray,
        max_batch: np.ndarray,
        window_s: np.ndarray,
        ttft_quantile: float = 0.95,
        tpot_quantile: float = 0.95,
    ) -> Prediction:
        """Tails at `rps` (shape (B, R): a row of rates per max batch), for each max batch and each window."""
        b = np.asarray(max_batch, dtype=int)
        lam = np.asarray(rps, dtype=float).reshape(len(b), -1)
        cap = np.broadcast_to(b[:, None], lam.shape)
        w = self.tokens.weights
        mean, token_w, seen, chunk_share = self._occupancy(lam, cap)

        # TPOT: quantile of the step time over decoded tokens.
        weights = np.concatenate(
            [
                (token_w * (1 - chunk_share)[..., None])[..., None],
                (token_w * (chunk_share / CHUNK_NODES)[..., None])[..., None].repeat(CHUNK_NODES, -1),
            ],
            axis=-1,
        ).reshape((*lam.shape, -1))
        cdf = np.cumsum(weights[..., self._order], axis=-1)
        tpot = self._sorted[np.minimum((cdf < tpot_quantile).sum(-1), len(self._sorted) - 1)]

        # TTFT.
        own, ex, ex2, ex3 = self._prefill_load(lam, mean)
        rho_p = lam * ex
        # M/G/1 wait: P(W > 0) = rho, then exponential. Its scale matches E[W²] (Takács), not E[W]: prompt
        # lengths are skewed, so the conditional wait is more variable than exponential and the tail longer.
        slack = np.maximum(1 - rho_p, 1e-9)
        mean_wait = lam * ex2 / (2 * slack)
        second = 2 * mean_wait**2 + lam * ex3 / (3 * slack)
        theta_p = np.sqrt(second / (2 * np.maximum(rho_p, 1e-12)))
        residence = self._residence(lam, own, ex, ex2, seen)
        offered = lam * residence
        wait_slot, drain = self._slot_wait(lam, cap, residence, seen, chunk_share, mean)
        theta_s = 1.0 / np.maximum(drain - lam, 1e-9)
        busy = 1.0 - np.exp(-mean) * (1 - np.minimum(rho_p, 1.0))
        window = np.asarray(window_s, dtype=float)[None, :, None, None]
        fixed = (busy * seen / 2)[:, None, :, None] + window + own[:, None, :, :]
        pa, ta = np.minimum(rho_p, 1.0)[:, None, :, None], np.maximum(theta_p, 1e-12)[:, None, :, None]
        pb, tb = wait_slot[:, None, :, None], np.maximum(theta_s, 1e-12)[:, None, :, None]

        def exceed(x: np.ndarray) -> np.ndarray:
            slack = x[..., None] - fixed
            return np.where(slack < 0, 1.0, _sum_tail(np.maximum(slack, 0.0), pa, ta, pb, tb)) @ w

        # Bracket: TTFT ≥ its fixed part, so the fixed part's quantile is a floor; the sum of the three parts'
        # quantiles at 1 − (1 − q)/3 is a ceiling (union bound). Nodes are sorted, so one index serves all rows.
        share = (1 - ttft_quantile) / 3
        cdf = np.cumsum(w)
        low = fixed[..., min(int(np.searchsorted(cdf, ttft_quantile)), len(w) - 1)]

        def wait_quantile(p: np.ndarray, scale: np.ndarray) -> np.ndarray:
            return scale * np.log(np.maximum(p / share, 1.0))

        high = (
            fixed[..., min(int(np.searchsorted(cdf, 1 - share)), len(w) - 1)]
            + wait_quantile(pa, ta)[..., 0]
            + wait_quantile(pb, tb)[..., 0]
        )
        for _ in range(16):
            mid = (low + high) / 2
            over = exceed(mid) > 1 - ttft_quantile
            low, high = np.where(over, mid, low), np.where(over, high, mid)
        stable = (rho_p < 1.0) & (offered < cap) & (lam < drain)
        return Prediction(
            ttft=np.where(stable[:, None, :], high, np.inf),
            tpot=np.where(stable, tpot, np.inf),
            utilisation=np.maximum(offered / cap, rho_p),
            mean_batch=mean,
            slot_occupancy=offered / cap,
        )
