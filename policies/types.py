"""Records shared by the planner, the autoscaler, the simulator and the operator.

These are the contract between policies/ (pure decisions) and its callers (controllers/ and the CLI):
plain frozen dataclasses, no I/O. Wire formats (status, events) are built from them in controllers/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from goodput.crds.inferenceservice import Tier


@dataclass(frozen=True)
class Load:
    """Offered load for one service: an arrival rate and token-length samples to draw from.

    Token samples (not just percentiles) keep the tail: p95 latency depends on the long prompts.
    """

    rps: float
    prompt_tokens: np.ndarray  # int samples, one per request
    output_tokens: np.ndarray
    batch_fraction: float = 0.0  # share of requests in the batch tier (mixed traffic)
    # share of prompt tokens a prefix cache serves: their prefill is not computed, their KV is still held
    cached_prompt_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.rps) or self.rps < 0:
            raise ValueError(f"rps must be a finite number >= 0, got {self.rps}")
        if len(self.prompt_tokens) == 0 or len(self.output_tokens) == 0:
            raise ValueError("token samples must not be empty")
        if not 0.0 <= self.batch_fraction <= 1.0:
            raise ValueError(f"batch_fraction must lie in [0, 1], got {self.batch_fraction}")
        if not 0.0 <= self.cached_prompt_fraction <= 1.0:
            raise ValueError(f"cached_prompt_fraction must lie in [0, 1], got {self.cached_prompt_fraction}")


@dataclass(frozen=True)
class TierConfig:
    """One tier's engine and fleet settings."""

    tier: Tier
    replicas: int
    max_batch: int
    batch_window_ms: float


@dataclass(frozen=True)
class Candidate:
    """One point of the planner's search: a configuration, its predictions and, if ruled out, why."""

    accelerator: str  # AcceleratorType value
    tensor_parallel: int
    replicas: int  # over all tiers
    max_batch: int
    batch_window_ms: float
    chunk_tokens: int
    tier: str  # TrafficClass value: interactive | batch | mixed
    tiers: tuple[TierConfig, ...]
    predicted_ttft_p95_ms: float
    predicted_tpot_p95_ms: float
    cost_per_hour: float
    utilisation: float  # per-replica load / capacity at the chosen replicas
    rejected: str | None = (
        None  # "memory" | "ttft" | "tpot" | "budget" | "max_replicas" | "max_count", with detail
    )

    @property
    def feasible(self) -> bool:
        return self.rejected is None


CAPACITY_LIMITS = ("max_count", "max_replicas", "budget")  # rejections that more capacity would lift


@dataclass(frozen=True)
class PlanResult:
    chosen: Candidate | None
    alternatives: tuple[Candidate, ...]  # ranked, best first, each with its rejection reason if any
    binding_constraint: str | None  # when nothing is feasible: the constraint that ruled out the best one
    kv_bytes_per_token: int

    @property
    def unservable(self) -> bool:
        """Nothing fits and no replica count would change that: the model does not fit, or a target is
        missed even by an unloaded replica. Capacity limits (maxCount, maxReplicas, budget) are not this."""
        return self.chosen is None and not (self.binding_constraint or "").startswith(CAPACITY_LIMITS)


@dataclass(frozen=True)
class Observation:
    """One control interval's view of a service, as the operator reads it from Prometheus.

    Fields are None when Prometheus had no series for them; `rps == 0` is an observation, not missing data.
    """

    time: float  # unix seconds at the end of the window
    window_s: float
    rps: float
    requests: float  # completed requests in the window
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    kv_cache_usage: float | None
    queue_depth: float | None  # waiting requests summed over pods
    running: float | None
    prompt_tokens_p50: float | None = None
    prompt_tokens_p95: float | None = None
    output_tokens_p50: float | None = None
    output_tokens_p95: float | None = None
    ready_replicas: int | None = None
    per_tier: dict[str, Observation] = field(default_factory=dict)
    # evenly spaced quantiles of the token-count histograms: the whole mix, not just two percentiles
    prompt_tokens_nodes: tuple[float, ...] | None = None
    output_tokens_nodes: tuple[float, ...] | None = None
    tpot_p50_ms: float | None = None  # inter-token median: the decode-only step, for calibration
    ttft_met: tuple[float, float] | None = None  # (first tokens within the TTFT target, all first tokens)
    # prompt tokens served from the prefix cache / those looked up
    prefix_cache_hit_fraction: float | None = None
    # the router's view (None without a router): requests it holds for a replica, requests it has sent to
    # replicas and not finished, and the quantile of the time requests waited in its queue
    router_queued: float | None = None
    router_in_flight: float | None = None
    router_wait_p95_ms: float | None = None
    # the TTFT the router's clients see (arrival at the router to the first streamed byte: its queue included),
    # None without a router or without a streamed first token in the window; as ttft_p95_ms and ttft_met
    router_ttft_p95_ms: float | None = None
    router_ttft_met: tuple[float, float] | None = None

    @property
    def client_ttft_p95_ms(self) -> float | None:
        """The TTFT quantile clients see: the router's where it timed first tokens, else the workers'."""
        return self.ttft_p95_ms if self.router_ttft_p95_ms is None else self.router_ttft_p95_ms

    @property
    def client_ttft_met(self) -> tuple[float, float] | None:
        """First tokens within the TTFT target, and all, as clients see them (the router's, else the workers')."""
        return self.ttft_met if self.router_ttft_met is None else self.router_ttft_met

    @property
    def backlog(self) -> float:
        """Requests waiting for a replica: in the workers' queues and in the router's."""
        return (self.queue_depth or 0.0) + (self.router_queued or 0.0)


@dataclass(frozen=True)
class Streak:
    """Consecutive intervals that met the SLO on one fleet: the evidence a proven rate is read from."""

    configuration: str
    replicas: int
    requests: float
    peak_rps: float  # the busiest load a plan was made for during it (demand and anticipated peaks)


@dataclass(frozen=True)
class ScalerState:
    """What the autoscaler remembers between intervals; persisted in the resource's status."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time, desired replicas) within the longest window
    last_scale_time: float | None = None
    ttft_factor: float = 1.0  # calibration: observed / predicted
    tpot_factor: float = 1.0
    calibration_samples: int = 0
    # (time, demand rps): recent peaks the plan anticipates
    load_history: tuple[tuple[float, float], ...] = ()
    # smoothed token mix: quantile nodes of prompt and output lengths
    prompt_tokens_nodes: tuple[float, ...] | None = None
    output_tokens_nodes: tuple[float, ...] | None = None
    token_weight: float = 0.0  # requests behind the token mix, decayed
    cached_prompt_fraction: float = 0.0  # share of prompt tokens the prefix cache served, averaged as the mix
    last_quiet: float | None = None  # last time demand fell far below a remembered peak (on/off traffic)
    # the SLO's error budget: first tokens seen and those that missed the TTFT target, decayed over an hour
    slo_seen: float = 0.0
    slo_missed: float = 0.0
    hint_time: float | None = None  # when the manifest's hint was seeded as a recommendation, while it stands
    steady_windows: int = 0  # consecutive windows with traffic at a steady rate
    # learned capacity per configuration ("H100-SXM/tp1"): (configuration, rate-axis factor, windows learned from)
    capacity: tuple[tuple[str, float, int], ...] = ()
    # per configuration, the highest per-replica load a streak of enough requests was planned for and served
    # within the SLO (policies/capacity.prove_load)
    proven: tuple[tuple[str, float], ...] = ()
    # the intervals within the SLO on the running fleet since its last change; not persisted: a restart
    # begins a new streak
    streak: Streak | None = None
    idle_since: float | None = None  # since when no request came, queued or ran (for scale to zero)
    backlog: float = 0.0  # the last window's backlog: its growth and the completions give the arrival rate


@dataclass(frozen=True)
class Decision:
    """The autoscaler's verdict for one interval."""

    plan: Candidate  # the plan to run from now on (unchanged when holding)
    state: ScalerState
    action: str  # "hold" | "scale" | "retune" | "rollout"
    reason: str  # one readable line, e.g. "scaled interactive 2→4: TTFT p95 820 ms > 500 ms at 31 rps"
    metrics_available: bool
    slo_met: bool | None  # None when unknown (no observation)
