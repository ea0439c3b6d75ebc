"""Request traces for trace replay: the one reader of trace files (Azure LLM CSV, Mooncake JSONL), rate
scaling, and a seeded synthetic diurnal generator.

Data: Azure LLM inference trace 2023 (code), Patel et al., "Splitwise: Efficient generative LLM inference using
phase splitting", ISCA 2024; Azure public dataset, CC-BY 4.0. Mooncake conversation trace, Qin et al.,
"Mooncake", FAST 2025; Apache-2.0. See data/README.md.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"  # vendored traces with their licenses (data/README.md)
AZURE_CODE_TRACE = DATA / "azure_llm_2023_code.csv"
MOONCAKE_CONVERSATION_TRACE = DATA / "mooncake_fast25_conversation.jsonl"
CITATION = "Azure LLM inference trace 2023 (code): Patel et al., Splitwise, ISCA 2024; Azure public dataset, CC-BY 4.0"
MOONCAKE_CITATION = (
    "Mooncake conversation trace: Qin et al., Mooncake, FAST 2025; kvcache-ai/Mooncake, Apache-2.0"
)
CITATIONS = {AZURE_CODE_TRACE.name: CITATION, MOONCAKE_CONVERSATION_TRACE.name: MOONCAKE_CITATION}
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival: seconds from the trace start, prompt and output token counts."""

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str = ""  # what was replayed: the file, its citation, and how it was transformed

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


def load_trace(path: str | Path) -> Trace:
    """A trace file as a Trace starting at 0 s, sorted by arrival; the format is detected from the content.

    Azure LLM CSV: a header with TIMESTAMP, ContextTokens, GeneratedTokens (ISO timestamps). Mooncake JSONL:
    one object a line with timestamp (ms from the start), input_length, output_length. Token counts of 0
    count as 1 (a request has at least one prompt and one output token). A malformed row (a missing field, a
    timestamp that is not one, a negative or fractional token count) is an error naming its line.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        text = handle.read()
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise ValueError(f"{path}: no requests")
    if first.lstrip().startswith("{"):
        t, prompt, output = _read_mooncake(path, text)
    elif all(column in first for column in AZURE_COLUMNS):
        t, prompt, output = _read_azure(path, text)
    else:
        raise ValueError(
            f"{path}:1: not a known trace format: expected an Azure LLM CSV header "
            f"({','.join(AZURE_COLUMNS)}) or Mooncake JSON lines ({', '.join(MOONCAKE_FIELDS)})"
        )
    if not len(t):
        raise ValueError(f"{path}: no requests")
    order = np.argsort(t, kind="stable")
    cite = CITATIONS.get(path.name)
    return Trace(
        path.stem,
        t[order] - t[order][0],
        np.maximum(prompt[order], 1),
        np.maximum(output[order], 1),
        f"{path.name}: {cite}" if cite else path.name,
    )


def load_csv(path: str | Path = AZURE_CODE_TRACE) -> Trace:
    """An Azure LLM trace CSV, the vendored code trace by default (`load_trace` reads any trace file)."""
    return load_trace(path)


def _read_azure(path: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = csv.DictReader(text.splitlines())
    stamps: list[np.datetime64] = []
    prompt: list[int] = []
    output: list[int] = []
    for line, row in enumerate(rows, start=2):
        try:
            stamp = np.datetime64(row["TIMESTAMP"].strip().replace(" ", "T"), "ns")
            if np.isnat(stamp):
                raise ValueError(f"TIMESTAMP must be a date and time, got {row['TIMESTAMP']!r}")
            stamps.append(stamp)
            prompt.append(_tokens(row["ContextTokens"], "ContextTokens"))
            output.append(_tokens(row["GeneratedTokens"], "GeneratedTokens"))
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}:{line}: malformed row {row}: {error}") from None
    seconds = (np.array(stamps, dtype="datetime64[ns]") - np.datetime64(0, "ns")) / np.timedelta64(1, "s")
    return (
        np.asarray(seconds, dtype=float),
        np.array(prompt, dtype=np.int64),
        np.array(output, dtype=np.int64),
    )


def _read_mooncake(path: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            stamp = float(row["timestamp"])
            if not math.isfinite(stamp):
                raise ValueError(f"timestamp must be a finite number, got {row['timestamp']!r}")
            t.append(stamp / 1000.0)
            prompt.append(_tokens(row["input_length"], "input_length"))
            output.append(_tokens(row["output_length"], "output_length"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}:{line}: malformed request ({error!r}); expected {MOONCAKE_FIELDS}"
            ) from None
    return np.array(t), np.array(prompt, dtype=np.int64), np.array(output, dtype=np.int64)


def _tokens(value: object, field: str) -> int:
    """A token count: a whole number ≥ 0 (0 is read as 1 later: a request has at least one token each way)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{field} must be a whole number, got {value!r}")
    count = int(value)  # type: ignore[call-overload]
    if count < 0:
        raise ValueError(f"{field} must be ≥ 0, got {value!r}")
    return count


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
        f"{trace.name}x{scale:g}",
        t[order],
        trace.prompt_tokens[idx][order],
        trace.output_tokens[idx][order],
        f"{trace.source}, rate ×{scale:g}",
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
        f"diurnal{hours:g}h",
        kept,
        source.prompt_tokens[pick].copy(),
        source.output_tokens[pick].copy(),
        f"synthetic diurnal day in {hours:g} h (seed {seed}), token lengths from {source.source}",
    )


def resolve(spec: str, scale: float = 1.0, seed: int = 0, csv: str | Path = AZURE_CODE_TRACE) -> Trace:
    """`synthetic:diurnal` or a trace file (Azure CSV or Mooncake JSONL); `scale` multiplies the request rate."""
    if spec.startswith("synthetic:"):
        kind = spec.removeprefix("synthetic:")
        if kind != "diurnal":
            raise ValueError(f"unknown synthetic workload {kind!r}; known: diurnal")
        base = diurnal(load_csv(csv), seed=seed)
        return base if scale == 1.0 else scale_rate(base, scale, seed=seed)
    trace = load_trace(spec)
    return trace if scale == 1.0 else scale_rate(trace, scale, seed=seed)


def lognormal_tokens(rng: np.random.Generator, p50: float, p95: float, count: int) -> np.ndarray:
    """`count` random token lengths, lognormal with the given median and 95th percentile, at least 1."""
    sigma = np.log(max(p95, p50) / p50) / 1.6448536269514722  # the standard normal's 95th percentile
    return np.maximum(np.rint(p50 * np.exp(sigma * rng.standard_normal(count))), 1).astype(np.int64)


def poisson(
    name: str,
    rate: Callable[[np.ndarray], np.ndarray],
    peak_rps: float,
    duration_s: float,
    prompt: tuple[float, float],
    output: tuple[float, float],
    seed: int = 0,
) -> Trace:
    """A seeded non-homogeneous Poisson trace: arrivals at `rate(t)` (≤ peak_rps) by thinning, token lengths
    lognormal with the given (p50, p95) of prompt and output."""
    rng = np.random.default_rng(seed)
    candidates = np.sort(rng.uniform(0.0, duration_s, rng.poisson(peak_rps * duration_s)))
    kept = candidates[rng.random(len(candidates)) * peak_rps < rate(candidates)]
    n = len(kept)
    return Trace(
        name,
        kept,
        lognormal_tokens(rng, *prompt, n),
        lognormal_tokens(rng, *output, n),
        f"synthetic {name} (seed {seed}): prompts p50/p95 {prompt[0]:g}/{prompt[1]:g}, "
        f"outputs {output[0]:g}/{output[1]:g} tokens",
    )
