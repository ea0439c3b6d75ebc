"""Request traces for trace replay: the Azure code trace, rate-scaled, and a seeded synthetic diurnal generator.

Data: Azure LLM inference trace 2023 (code), Patel et al., "Splitwise: Efficient generative LLM inference using
phase splitting", ISCA 2024; Azure public dataset, CC-BY 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"  # vendored traces with their licenses (data/README.md)
AZURE_CODE_TRACE = DATA / "azure_llm_2023_code.csv"
MOONCAKE_CONVERSATION_TRACE = DATA / "mooncake_fast25_conversation.jsonl"
CITATION = "Azure LLM inference trace 2023 (code): Patel et al., Splitwise, ISCA 2024; Azure public dataset, CC-BY 4.0"


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival: seconds from the trace start, prompt and output token counts."""

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if not len(self.prompt_tokens) == len(self.output_tokens) == n:
            raise ValueError("arrival, prompt and output arrays must have one entry per request")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("arrivals must be sorted")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def rate_per_window(self, window_s: float) -> np.ndarray:
        """Requests per second in consecutive windows, from t=0."""
        bins = np.arange(0.0, self.duration_s + window_s, window_s)
        return np.histogram(self.arrival_s, bins=bins)[0] / window_s


def _parse_time(stamp: str) -> float:
    # Seven fractional digits do not parse before Python 3.11's fromisoformat; microseconds suffice.
    head, _, frac = stamp.partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}").timestamp()


def load_csv(path: str | Path = AZURE_CODE_TRACE) -> Trace:
    """An Azure LLM trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens) as a Trace starting at 0 s."""
    rows = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=str)
    t = np.array([_parse_time(s) for s in rows[:, 0]])
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    prompt = np.maximum(rows[order, 1].astype(int), 1)
    output = np.maximum(rows[order, 2].astype(int), 1)
    return Trace(Path(path).stem, t, prompt, output)


def scale_rate(trace: Trace, scale: float, seed: int = 0, jitter_s: float = 1.0) -> Trace:
    """The same hour at `scale` times the request rate, keeping its burst structure.

    Each request is copied floor(scale) times, plus once more with probability frac(scale); copies arrive
    within `jitter_s` after the original so bursts stay bursts. Scales below 1 thin the trace.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    copies = np.floor(scale).astype(int) + (rng.random(len(trace)) < scale % 1.0)
    idx = np.repeat(np.arange(len(trace)), copies)
    first = np.r_[0, np.cumsum(copies)[:-1]]
    is_copy = np.arange(len(idx)) != np.repeat(first, copies)
    t = trace.arrival_s[idx] + np.where(is_copy, rng.uniform(0.0, jitter_s, len(idx)), 0.0)
    order = np.argsort(t, kind="stable")
    return Trace(
        f"{trace.name}x{scale:g}", t[order], trace.prompt_tokens[idx][order], trace.output_tokens[idx][order]
    )


def diurnal(
    source: Trace,
    hours: float = 2.0,
    mean_rps: float = 40.0,
    peak_to_trough: float = 4.0,
    bursts_per_hour: float = 4.0,
    burst_factor: float = 1.3,
    burst_s: tuple[float, float] = (20.0, 60.0),
    seed: int = 0,
) -> Trace:
    """A seeded synthetic day compressed into `hours`: a sinusoidal rate with the given peak/trough ratio,
    plus Poisson-timed bursts that multiply the rate, arrivals by thinning a Poisson process, token lengths
    resampled as (prompt, output) pairs from `source`.
    """
    if peak_to_trough < 1:
        raise ValueError("peak_to_trough must be >= 1")
    rng = np.random.default_rng(seed)
    duration = hours * 3600.0
    amp = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    n_bursts = rng.poisson(bursts_per_hour * hours)
    starts = rng.uniform(0.0, duration, n_bursts)
    ends = starts + rng.uniform(*burst_s, n_bursts)

    def rate(t: np.ndarray) -> np.ndarray:
        base = mean_rps * (1.0 - amp * np.cos(2.0 * np.pi * t / duration))  # trough at the start and end
        in_burst = ((t[:, None] >= starts) & (t[:, None] < ends)).any(axis=1) if n_bursts else False
        return base * np.where(in_burst, burst_factor, 1.0)

    peak = mean_rps * (1.0 + amp) * burst_factor
    candidates = np.sort(rng.uniform(0.0, duration, rng.poisson(peak * duration)))
    kept = candidates[rng.random(len(candidates)) < rate(candidates) / peak]
    pick = rng.integers(0, len(source), len(kept))
    return Trace(
        f"diurnal{hours:g}h", kept, source.prompt_tokens[pick].copy(), source.output_tokens[pick].copy()
    )


def resolve(spec: str, scale: float = 1.0, seed: int = 0, csv: str | Path = AZURE_CODE_TRACE) -> Trace:
    """`synthetic:diurnal` or a CSV path; `scale` multiplies the request rate of either."""
    if spec.startswith("synthetic:"):
        kind = spec.removeprefix("synthetic:")
        if kind != "diurnal":
            raise ValueError(f"unknown synthetic workload {kind!r}; known: diurnal")
        base = diurnal(load_csv(csv), seed=seed)
        return base if scale == 1.0 else scale_rate(base, scale, seed=seed)
    trace = load_csv(spec)
    return trace if scale == 1.0 else scale_rate(trace, scale, seed=seed)
