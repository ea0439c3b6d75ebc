"""The InferenceService resource: what a platform team applies to serve one model at its SLO."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from goodput.crds.common import Condition, Resource
from goodput.crds.rules import Rule

KIND = "InferenceService"
PLURAL = "inferenceservices"
SHORT_NAMES = ("gpsvc",)


class AcceleratorType(StrEnum):
    """Accelerators the hardware catalog in policies/ knows; CPU is for local runs and tests."""

    H100_SXM = "H100-SXM"
    H100_PCIE = "H100-PCIe"
    H200 = "H200"
    A100_40GB = "A100-40GB"
    A100_80GB = "A100-80GB"
    L40S = "L40S"
    L4 = "L4"
    CPU = "CPU"


class TrafficClass(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"
    MIXED = "mixed"


class Tier(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


class Mode(StrEnum):
    AUTO = "auto"
    RECOMMEND = "recommend"


PositiveInt = Annotated[int, Field(ge=1)]


class Architecture(Resource):
    """Model shape; read from config.json when the manifest leaves it out."""

    params: PositiveInt = Field(description="Total parameter count.")
    layers: PositiveInt = Field(description="Decoder layers.")
    hidden_size: PositiveInt = Field(description="Model (embedding) dimension.")
    heads: PositiveInt = Field(description="Attention (query) heads.")
    kv_heads: PositiveInt = Field(
        description="Key/value heads; fewer than heads under grouped-query attention."
    )
    head_dim: PositiveInt = Field(description="Dimension of one attention head.")
    vocab_size: PositiveInt = Field(description="Vocabulary size (embedding and LM-head rows).")
    intermediate_size: PositiveInt | None = Field(default=None, description="MLP inner dimension.")

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.kvHeads <= self.heads", message="kvHeads must not exceed heads", field_path=".kvHeads"
        ),
        Rule(
            rule="self.heads % self.kvHeads == 0",
            message="heads must be a multiple of kvHeads (grouped-query attention)",
            field_path=".kvHeads",
        ),
    )


class ModelSpec(Resource):
    name: str = Field(min_length=1, max_length=253, description="Served model name (the OpenAI `model`).")
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="Path to a Hugging Face style folder (config.json + safetensors), or random:<preset>.",
    )
    architecture: Architecture | None = Field(
        default=None, description="Model shape; read from config.json or the preset when omitted."
    )
    dtype: Literal["bfloat16", "float16", "float32", "fp8"] = Field(
        default="bfloat16",
        description="Weight and KV-cache precision; sets bytes per parameter and per KV element.",
    )


class SLO(Resource):
    """Latency objectives. Give a p95 or a p99 target for each of TTFT and TPOT."""

    ttft_p95_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="Time to first token, 95th percentile target, in ms."
    )
    tpot_p95_ms: float | None = Field(
        default=None, gt=0, le=60_000, description="Time per output token, 95th percentile target, in ms."
    )
    ttft_p99_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="Time to first token, 99th percentile target, in ms."
    )
    tpot_p99_ms: float | None = Field(
        default=None, gt=0, le=60_000, description="Time per output token, 99th percentile target, in ms."
    )
    attainment: float = Field(
        default=0.99, gt=0, lt=1, description="Fraction of requests that must meet both targets."
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="has(self.ttftP95Ms) || has(self.ttftP99Ms)",
            message="a TTFT target is required: set ttftP95Ms or ttftP99Ms",
            field_path=".ttftP95Ms",
        ),
        Rule(
            rule="has(self.tpotP95Ms) || has(self.tpotP99Ms)",
            message="a TPOT target is required: set tpotP95Ms or tpotP99Ms",
            field_path=".tpotP95Ms",
        ),
        Rule(
            rule="self.attainment > 0.0 && self.attainment < 1.0",
            message="attainment must lie strictly between 0 and 1",
            field_path=".attainment",
        ),
    )

    def targets(self, metric: Literal["ttft", "tpot"]) -> tuple[tuple[float, float], ...]:
        """(quantile, target in ms) of each target set for `metric`, the p95 one first."""
        p95, p99 = (
            (self.ttft_p95_ms, self.ttft_p99_ms) if metric == "ttft" else (self.tpot_p95_ms, self.tpot_p99_ms)
        )
        return tuple((q, ms) for q, ms in ((0.95, p95), (0.99, p99)) if ms is not None)

    def steering_targets(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The (quantile, ms) TTFT and TPOT targets one number is compared with: each p95 target, else the p99.

        The CEL rules require a target of each, so both exist on any validated SLO.
        """
        return self.targets("ttft")[0], self.targets("tpot")[0]


class TokenPercentiles(Resource):
    p50: PositiveInt
    p95: PositiveInt

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(rule="self.p50 <= self.p95", message="p50 must not exceed p95", field_path=".p50"),
    )


class Traffic(Resource):
    traffic_class: TrafficClass = Field(
        alias="class",
        description="interactive: latency first (2-5 ms batch window); batch: throughput first; mixed: both tiers.",
    )
    expected_rps: float | None = Field(
        default=None, ge=0, description="Cold-start hint: requests per second before any observation."
    )
    prompt_tokens: TokenPercentiles | None = Field(
        default=None, description="Cold-start hint: prompt lengths."
    )
    output_tokens: TokenPercentiles | None = Field(
        default=None, description="Cold-start hint: output lengths."
    )
    batch_fraction: float | None = Field(
        default=None, ge=0, le=1, description="For mixed traffic: the share of requests that are batch."
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!has(self.batchFraction) || self.class == 'mixed'",
            message="batchFraction applies only to class mixed",
            field_path=".batchFraction",
        ),
    )


class AcceleratorPool(Resource):
    type: AcceleratorType = Field(description="Accelerator model, resolved against the hardware catalog.")
    price_per_hour: float | None = Field(
        default=None, ge=0, description="USD per GPU-hour; the catalog's list price when omitted."
    )
    max_count: PositiveInt = Field(default=8, description="GPUs of this type the service may use.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels that place workers on this pool's nodes."
    )


class Scaling(Resource):
    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description=(
            "Fewest replicas over all tiers. 0 scales the service to zero after the SLOPolicy's "
            "scaleToZeroAfterSeconds idle; it requires spec.router."
        ),
    )
    max_replicas: int = Field(default=8, ge=1, le=1000, description="Most replicas over all tiers.")
    max_tensor_parallel: Literal[1, 2, 4, 8] = Field(
        default=8, description="Largest tensor-parallel degree to consider."
    )
    max_cost_per_hour: float | None = Field(
        default=None, gt=0, description="Budget in USD per hour; plans above it are ruled out."
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field_path=".minReplicas",
        ),
    )


class SecretKeyRef(Resource):
    name: str = Field(min_length=1, max_length=253, description="Secret in the service's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


class WorkerSpec(Resource):
    image: str = Field(
        default="ghcr.io/goodput/worker:0.1.0", min_length=1, description="Worker container image."
    )
    api_key_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key the worker requires of clients."
    )


class QuotaLimits(Resource):
    tokens_per_second: float | None = Field(
        default=None, gt=0, description="Prompt plus output-budget tokens a tenant may send per second."
    )
    burst_tokens: float | None = Field(
        default=None,
        gt=0,
        description="Token bucket size: a burst allowed at once (one second's tokens if unset).",
    )
    max_concurrent_requests: int | None = Field(default=None, ge=1, description="Requests in flight at once.")


class TenantQuota(QuotaLimits):
    name: str = Field(
        min_length=1,
        max_length=253,
        description="Tenant: the X-Goodput-Tenant header, else 'key-' and 12 hex digits of the API key's SHA-256.",
    )


class RouterSpec(Resource):
    """The service's own endpoint: a router in front of its tiers (prefix- and load-aware, queueing, quotas)."""

    replicas: int = Field(
        default=2, ge=2, le=100, description="Router pods (at least two: one may be evicted)."
    )
    image: str = Field(
        default="ghcr.io/goodput/operator:0.1.0",
        min_length=1,
        description="Image with the router (`python -m goodput.router`); the operator's image carries it.",
    )
    max_queue: int = Field(
        default=1000, ge=0, le=1_000_000, description="Requests queued per tier before 429."
    )
    max_wait_seconds: float = Field(default=60.0, gt=0, le=3600, description="Queue wait before 503.")
    default_quota: QuotaLimits | None = Field(default=None, description="Quota of every tenant not listed.")
    # At most 100: the uniqueness rule is quadratic and the API server bounds a rule's estimated cost.
    tenant_quotas: list[TenantQuota] = Field(default_factory=list, max_length=100)

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!has(self.tenantQuotas) || self.tenantQuotas.all(a, self.tenantQuotas.exists_one(b, b.name == a.name))",
            message="each tenant may appear only once",
            field_path=".tenantQuotas",
        ),
    )


class InferenceServiceSpec(Resource):
    model: ModelSpec
    slo: SLO
    traffic: Traffic
    accelerators: list[AcceleratorPool] = Field(min_length=1, max_length=16)
    scaling: Scaling = Field(default_factory=Scaling)
    policy_ref: str | None = Field(
        default=None,
        max_length=253,
        description="Name of a cluster-scoped SLOPolicy; the default applies when absent.",
    )
    mode: Mode = Field(
        default=Mode.AUTO,
        description="auto: the operator actuates its plan; recommend: status and events only.",
    )
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    router: RouterSpec | None = Field(
        default=None,
        description="Deploy a router: one endpoint (a Service named after the InferenceService) for every tier.",
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="size(self.accelerators) >= 1",
            message="at least one accelerator pool is required",
            field_path=".accelerators",
        ),
        Rule(
            rule="self.accelerators.all(a, self.accelerators.exists_one(b, b.type == a.type))",
            message="each accelerator type may appear only once",
            field_path=".accelerators",
        ),
        Rule(
            rule="!has(self.scaling) || self.scaling.minReplicas > 0 || has(self.router)",
            message=(
                "scaling.minReplicas 0 requires spec.router: only the router holds a request while no replica "
                "runs, and its queue is what wakes the service"
            ),
            field_path=".scaling.minReplicas",
        ),
    )


class Observed(Resource):
    """What the last control interval saw, from Prometheus."""

    time: datetime
    window_seconds: float
    rps: float
    prompt_tokens_p50: float | None = None
    prompt_tokens_p95: float | None = None
    output_tokens_p50: float | None = None
    output_tokens_p95: float | None = None
    ttft_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    kv_cache_usage: float | None = None
    queue_depth: float | None = None
    router_queue_depth: float | None = Field(
        default=None, description="Requests the router held for a replica (with spec.router)."
    )
    router_queue_wait_p95_ms: float | None = Field(
        default=None, description="95th percentile of the time requests waited in the router for a replica."
    )
    router_ttft_p95_ms: float | None = Field(
        default=None,
        description="95th percentile of the TTFT the router's clients see (arrival at the router to the first "
        "streamed byte, its queue included; a request it holds counts as a miss in the window it waits past the "
        "target); the autoscaler's TTFT breach and error budget read it when present.",
    )
    ready_replicas: int | None = None


class TierPlan(Resource):
    tier: Tier
    replicas: int = Field(ge=0)
    max_batch: PositiveInt
    batch_window_ms: float = Field(ge=0)


class PlanStatus(Resource):
    accelerator: AcceleratorType
    tensor_parallel: PositiveInt
    replicas: int = Field(ge=0)
    max_batch: PositiveInt
    batch_window_ms: float = Field(ge=0)
    chunk_tokens: PositiveInt
    tier: TrafficClass
    tiers: list[TierPlan] = Field(default_factory=list)
    predicted_ttft_p95_ms: float
    predicted_tpot_p95_ms: float
    cost_per_hour: float


class Decision(Resource):
    time: datetime
    from_replicas: int = Field(alias="from")
    to_replicas: int = Field(alias="to")
    reason: str


class LearnedCapacity(Resource):
    """What a configuration's replica really carries at the SLO, relative to the performance model."""

    configuration: str = Field(description='Accelerator and tensor parallelism, e.g. "H100-SXM/tp1".')
    factor: float = Field(gt=0, description="A replica carries this many times the load the model predicts.")
    samples: int = Field(default=0, ge=0, description="Windows it was learned from.")
    proven_rps: float | None = Field(
        default=None,
        ge=0,
        description="The highest per-replica load planned for and served within the SLO: plans trust the factor near it.",
    )


class Calibration(Resource):
    """Observed/predicted correction factors, kept in status so a restart remembers them."""

    ttft_factor: float = Field(default=1.0, gt=0)
    tpot_factor: float = Field(default=1.0, gt=0)
    samples: int = Field(default=0, ge=0)
    updated: datetime | None = None
    capacity: list[LearnedCapacity] = Field(
        default_factory=list, max_length=32, description="Learned capacity per configuration run."
    )


SCALER_WINDOW_ITEMS = 720  # an hour of recommendations at a 5 s interval; older ones are dropped first
TOKEN_NODES_ITEMS = 64


class RecommendationPoint(Resource):
    time: float = Field(description="Unix seconds.")
    replicas: int = Field(ge=0)


class LoadPoint(Resource):
    time: float = Field(description="Unix seconds.")
    rps: float = Field(ge=0)


class ScalerStatus(Resource):
    """The autoscaler's windows, kept in status so a restarted operator keeps its stabilization and peaks."""

    recommendations: list[RecommendationPoint] = Field(
        default_factory=list,
        max_length=SCALER_WINDOW_ITEMS,
        description="Desired replicas per interval within the longest stabilization window.",
    )
    load_history: list[LoadPoint] = Field(
        default_factory=list,
        max_length=SCALER_WINDOW_ITEMS,
        description="Recent arrival-rate peaks the plan anticipates.",
    )
    prompt_tokens_nodes: list[float] | None = Field(
        default=None, max_length=TOKEN_NODES_ITEMS, description="Smoothed prompt-length quantile nodes."
    )
    output_tokens_nodes: list[float] | None = Field(
        default=None, max_length=TOKEN_NODES_ITEMS, description="Smoothed output-length quantile nodes."
    )
    token_weight: float = Field(default=0.0, ge=0, description="Requests behind the token mix, decayed.")
    cached_prompt_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of prompt tokens the prefix cache served, smoothed as the mix.",
    )
    last_quiet: float | None = Field(
        default=None, description="Unix seconds when demand last fell far below a remembered peak."
    )
    slo_seen: float = Field(
        default=0.0, ge=0, description="First tokens behind the TTFT error budget, decayed over an hour."
    )
    slo_missed: float = Field(
        default=0.0, ge=0, description="Of those first tokens, the ones later than the TTFT target."
    )
    hint_time: float | None = Field(
        default=None,
        description="Unix seconds of the recommendation the traffic hints stand for, while it stands.",
    )
    steady_windows: int = Field(
        default=0, ge=0, description="Consecutive windows of traffic at a steady rate."
    )
    idle_since: float | None = Field(
        default=None,
        description="Unix seconds since which no request finished, queued or ran (for scale to zero).",
    )
    backlog: float = Field(
        default=0.0,
        ge=0,
        description="Requests waiting at the last evaluation: their change gives the arrival rate.",
    )


class InferenceServiceStatus(Resource):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed: Observed | None = None
    plan: PlanStatus | None = None
    last_decision: Decision | None = None
    calibration: Calibration | None = None
    scaler: ScalerStatus | None = None
    replicas: int | None = Field(default=None, description="Ready replicas over all tiers.")
    endpoint: str | None = Field(
        default=None, description="The router's URL inside the cluster, when deployed."
    )


class InferenceService(Resource):
    api_version: Literal["goodput.dev/v1alpha1"] = "goodput.dev/v1alpha1"
    kind: Literal["InferenceService"] = "InferenceService"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
