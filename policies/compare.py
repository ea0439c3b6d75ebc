"""The trace-replay comparison: goodput's autoscaler against HPA, KEDA, static and the hindsight oracle.

Every policy replays the same trace on the same simulated fleet (same perf model, start delay, routing seed);
each baseline is swept over its main knob, and its headline figures are those of its cheapest setting that
reaches the attainment target (or its highest-attainment setting when none does). This module is the pure
part: the setup, the simulations to run, each one run, and the report built from their results;
`controllers.replay` runs them side by side and renders tables and plots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.autoscale import autoscale
from goodput.policies.baselines import HPA, KEDA, Static, oracle
from goodput.policies.catalog import price_of
from goodput.policies.latency import ReplicaPredictor, TokenStats
from goodput.policies.observe import DEFAULT_WINDOW_S
from goodput.policies.perfmodel import planned_model
from goodput.policies.plancache import PlanCache
from goodput.policies.profiles import profile_for
from goodput.policies.simulator import (
    Actuation,
    EngineConfig,
    FleetView,
    SimConfig,
    SimResult,
    SLOTarget,
    StepProfile,
    simulate,
)
from goodput.policies.startup import StartModel
from goodput.policies.types import Candidate, Load, Observation, PlanResult, ScalerState
from goodput.policies.workloads import Trace

POLICIES = ("goodput", "hpa", "keda", "static", "oracle")
HPA_TARGETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # vllm:num_requests_running per pod
KEDA_THRESHOLDS = (1.0, 2.0, 4.0, 8.0, 16.0)  # vllm:num_requests_waiting per replica
SWEEPS = {"hpa": HPA_TARGETS, "keda": KEDA_THRESHOLDS}  # extended until they bracket the target, as static
BRACKET_ROUNDS = 4  # at most this many settings added to each sweep
GOODPUT_HEADROOMS = (0.0, 0.1, 0.2, 0.3)  # SLOPolicy headroom, goodput's main knob
STATIC_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)  # of the replicas planned for the peak 15 s rate


@dataclass(frozen=True)
class ServiceShape:
    """The benchmark service beside its trace's rate and token hints: the model, the accelerator pools it may
    use (type, USD per GPU-hour or None for the catalog's list price) and its tensor-parallel bound."""

    model: str = "llama-3-8b"
    pools: tuple[tuple[str, float | None], ...] = (("H100-SXM", None),)
    max_tensor_parallel: int = 1


def benchmark_service(
    expected_rps: float,
    max_replicas: int = 64,
    prompt_tokens: tuple[int, int] | None = None,
    output_tokens: tuple[int, int] | None = None,
    slo_ms: tuple[float, float] = (1000.0, 100.0),
    shape: ServiceShape = ServiceShape(),
) -> InferenceServiceSpec:
    """A service with interactive SLOs as a platform team would apply it (by default Llama-3-8B class on H100
    SXM, one GPU per replica).

    Token hints are (p50, p95) of prompt and output lengths, as a team reads them off its request logs.
    """
    traffic: dict[str, Any] = {"class": "interactive", "expectedRps": round(expected_rps, 3)}
    for key, hint in (("promptTokens", prompt_tokens), ("outputTokens", output_tokens)):
        if hint is not None:
            traffic[key] = {"p50": hint[0], "p95": hint[1]}
    pools = [
        {"type": kind, "maxCount": max_replicas * shape.max_tensor_parallel}
        | ({"pricePerHour": price} if price is not None else {})
        for kind, price in shape.pools
    ]
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": shape.model, "source": f"random:{shape.model}"},
            "slo": {"ttftP95Ms": slo_ms[0], "tpotP95Ms": slo_ms[1], "attainment": 0.99},
            "traffic": traffic,
            "accelerators": pools,
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": max_replicas,
                "maxTensorParallel": shape.max_tensor_parallel,
            },
        }
    )


Configuration = tuple[str, int]  # (accelerator, tensor parallel)


def configuration_of(c: Candidate) -> Configuration:
    return c.accelerator, c.tensor_parallel


def configuration_label(configuration: Configuration) -> str:
    return f"{configuration[0]} TP{configuration[1]}"


def ranked(result: PlanResult) -> tuple[Candidate, ...]:
    """The chosen candidate, then the alternatives, best first."""
    return ((result.chosen,) if result.chosen else ()) + result.alternatives


def feasible_configurations(result: PlanResult) -> list[Configuration]:
    """Every (accelerator, TP) the planner found a feasible fleet for, cheapest first."""
    found: list[Configuration] = []
    for c in ranked(result):
        if c.rejected is None and configuration_of(c) not in found:
            found.append(configuration_of(c))
    return found


def within(result: PlanResult, configuration: Configuration) -> PlanResult:
    """The plan restricted to one configuration: its best feasible candidate there, or none."""
    mine = tuple(c for c in ranked(result) if configuration_of(c) == configuration)
    chosen = next((c for c in mine if c.rejected is None), None)
    binding = None if chosen else (mine[0].rejected if mine else f"{configuration} was not planned")
    return replace(result, chosen=chosen, alternatives=mine, binding_constraint=binding)


@dataclass(frozen=True)
class Pinned:
    """Plans drawn from one configuration: a simulated fleet keeps the accelerator and TP it started on (the
    simulator actuates replicas and engine knobs, not a rollout to other hardware)."""

    plan_fn: Callable[..., PlanResult]
    configuration: Configuration

    def __call__(
        self, spec: InferenceServiceSpec, load: Load, policy: SLOPolicySpec, ttft: float, tpot: float
    ) -> PlanResult:
        """Planned over the configuration's pool and TP bound only (the same candidates for it, without
        pricing every other configuration on each interval), then restricted to it."""
        kind, tp = self.configuration
        narrowed = spec.model_copy(
            update={
                "accelerators": [p for p in spec.accelerators if p.type == kind],
                "scaling": spec.scaling.model_copy(update={"max_tensor_parallel": tp}),
            }
        )
        return within(self.plan_fn(narrowed, load, policy, ttft, tpot), self.configuration)


@dataclass
class GoodputController:
    """Runs `policies.autoscale` exactly as the operator does, and actuates its plan on the simulated fleet."""

    spec: InferenceServiceSpec
    policy: SLOPolicySpec
    plan: Candidate
    state: ScalerState
    plan_fn: Callable[..., PlanResult]
    name: str = "goodput"

    def decide(self, now: float, obs: Observation | None, fleet: FleetView) -> Actuation:
        decision = autoscale(self.spec, self.policy, self.plan, obs, self.state, now, plan_fn=self.plan_fn)
        self.plan, self.state = decision.plan, decision.state
        return Actuation(decision.plan.replicas, engine_of(decision.plan))


def engine_of(c: Candidate) -> EngineConfig:
    return EngineConfig(
        max_batch=c.max_batch, batch_window_s=c.batch_window_ms / 1000.0, chunk_tokens=c.chunk_tokens
    )


@dataclass(frozen=True)
class Setup:
    spec: InferenceServiceSpec
    policy: SLOPolicySpec
    initial: Candidate
    sim: SimConfig
    peak_replicas: int
    capacity_rps: float
    configurations: tuple[Configuration, ...]  # feasible at the peak, cheapest first


def setup(
    trace: Trace,
    start_delay_s: float | None = None,
    seed: int = 0,
    policy: SLOPolicySpec | None = None,
    slo_ms: tuple[float, float] = (1000.0, 100.0),
    shape: ServiceShape = ServiceShape(),
    configuration: Configuration | None = None,
    window_s: float | None = None,
) -> Setup:
    """The service, its initial plan and the simulated fleet; pods start in `start_delay_s`, by default what
    `policies.startup.StartModel` gives for the model and its TP. The fleet runs the planner's cheapest
    configuration, or `configuration` when given (one the planner finds feasible at the peak).

    Each observation covers `window_s`, the operator's PromQL range: by default its 15 s, or the policy's
    interval where that is longer (the simulator observes at least one interval).

    Every policy starts from the same fleet: the plan for the trace's busiest 15 s, as a platform team
    provisions a new service for its expected peak (the manifest's `expectedRps` hint, with the trace's
    token percentiles as its token hints). Starting from the mean rate instead would make the first bursts a
    cold start that no policy could serve.
    """
    peak_rps = float(trace.rate_per_window(15.0).max())
    spec = benchmark_service(
        peak_rps,
        prompt_tokens=_p50_p95(trace.prompt_tokens),
        output_tokens=_p50_p95(trace.output_tokens),
        slo_ms=slo_ms,
        shape=shape,
    )
    policy = policy or SLOPolicySpec()
    load = Load(rps=peak_rps, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens)
    result = planner.plan(spec, load, policy, 1.0, 1.0)
    initial = (result if configuration is None else within(result, configuration)).chosen
    if initial is None:
        where = "any configuration" if configuration is None else configuration_label(configuration)
        raise ValueError(f"the planner finds no feasible fleet on {where} at the trace's peak rate")
    peak_replicas = initial.replicas
    model = planned_model(spec.model, initial)
    profile = StepProfile.from_model(model, initial.max_batch, initial.chunk_tokens)
    predictor = ReplicaPredictor(
        model,
        TokenStats.from_samples(trace.prompt_tokens, trace.output_tokens),
        initial.chunk_tokens,
        initial.max_batch,
    )
    capacity = float(predictor.saturation_rps(np.array([initial.max_batch]))[0])
    slo = SLOTarget(
        ttft_ms=spec.slo.steering_targets()[0][1],
        tpot_ms=spec.slo.steering_targets()[1][1],
        attainment=spec.slo.attainment,
    )
    if start_delay_s is None:
        start_delay_s = StartModel().delay_s(profile_for(spec.model), initial.tensor_parallel)
    sim = SimConfig(
        profile=profile,
        engine=engine_of(initial),
        slo=slo,
        gpus_per_replica=initial.tensor_parallel,
        price_per_gpu_hour=price_of(next(p for p in spec.accelerators if p.type == initial.accelerator)),
        start_delay_s=start_delay_s,
        interval_s=policy.evaluation_interval_seconds,
        window_s=max(DEFAULT_WINDOW_S, policy.evaluation_interval_seconds) if window_s is None else window_s,
        initial_replicas=initial.replicas,
        seed=seed,
    )
    configurations = tuple(feasible_configurations(result))
    return Setup(spec, policy, initial, sim, peak_replicas, capacity, configurations)


def _p50_p95(tokens: np.ndarray) -> tuple[int, int]:
    p50, p95 = np.percentile(tokens, [50, 95])
    return max(1, round(float(p50))), max(1, round(float(p95)))


Job = tuple[
    Any, SimConfig, Any
]  # (controller, or None for the oracle; the fleet; setting, or oracle capacity)


def run_job(trace: Trace, job: Job) -> SimResult:
    """One simulation of the comparison (the oracle's search is several)."""
    controller, cfg, arg = job
    if controller is None:  # the oracle searches its schedule with repeated simulations
        return oracle(trace, cfg, arg)[0]
    return simulate(trace, controller, cfg, arg)


def sweep_jobs(s: Setup, policies: tuple[str, ...]) -> list[tuple[str, Job]]:
    """(policy name, simulation) for every policy and setting of its sweep, in report order."""
    jobs: list[tuple[str, Job]] = []
    for name in policies:
        if name == "goodput":
            # the policy as configured first (the headline), then its main knob swept like the baselines'
            knobs = [s.policy] + [
                s.policy.model_copy(update={"headroom": h})
                for h in GOODPUT_HEADROOMS
                if h != s.policy.headroom
            ]
            jobs += [
                (
                    name,
                    (
                        GoodputController(
                            s.spec,
                            p,
                            s.initial,
                            ScalerState(),
                            Pinned(PlanCache(), configuration_of(s.initial)),
                        ),
                        s.sim,
                        f"headroom={p.headroom:g}",
                    ),
                )
                for p in knobs
            ]
        elif name in SWEEPS:
            jobs += [(name, baseline_job(name, knob, s)) for knob in SWEEPS[name]]
        elif name == "static":
            jobs += [(name, static_job(n, s)) for n in static_counts(s)]
        elif name == "oracle":
            jobs.append((name, (None, s.sim, s.capacity_rps)))
        else:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return jobs


def baseline_job(name: str, knob: float, s: Setup) -> Job:
    """One setting of an HPA, KEDA or static sweep."""
    if name == "static":
        return static_job(round(knob), s)
    if name == "hpa":
        return (HPA(target=knob), s.sim, f"running/pod={knob:g}")
    return (KEDA(threshold=knob), s.sim, f"waiting/replica={knob:g}")


def static_counts(s: Setup) -> list[int]:
    """The static sweep's fleet sizes: fractions of the replicas planned for the peak, at least five."""
    counts = sorted({max(1, round(f * s.peak_replicas)) for f in STATIC_FRACTIONS})
    while len(counts) < 5:  # small fleets: extend upwards so the sweep still has five settings
        counts.append(counts[-1] + 1)
    return counts


def static_job(replicas: int, s: Setup) -> Job:
    return (Static(replicas), replace(s.sim, initial_replicas=replicas), f"replicas={replicas}")


def bracketing(name: str, knobs: list[float], results: list[SimResult], target: float) -> float | None:
    """The next setting a sweep needs to hold settings on both sides of the attainment target.

    A larger per-pod target (HPA) or threshold (KEDA) runs fewer replicas: when every setting reaches the
    target the sweep doubles its largest, when none does it halves its smallest. A static fleet grows by a
    quarter (at least one replica) when none reaches it, and shrinks by one when all do. None once it brackets.
    """
    meets = [r.attainment >= target for r in results]
    if any(meets) and not all(meets):
        return None
    if name != "static":
        return max(knobs) * 2 if all(meets) else min(knobs) / 2
    if all(meets):
        return min(knobs) - 1 if min(knobs) > 1 else None
    return max(knobs) + max(1, math.ceil(max(knobs) / 4))


def headline(results: list[SimResult], target: float) -> SimResult:
    meeting = [r for r in results if r.attainment >= target]
    if meeting:
        return min(meeting, key=lambda r: r.gpu_hours)
    return max(results, key=lambda r: (r.attainment, -r.gpu_hours))


def build_report(trace: Trace, s: Setup, runs: dict[str, list[SimResult]]) -> dict[str, Any]:
    """The comparison's report: each policy's headline figures and sweep, the targets, workload and setup."""
    target = s.sim.slo.attainment
    report: dict[str, Any] = {"policies": {}}
    for name, results in runs.items():
        best = results[0] if name == "goodput" else headline(results, target)
        entry = {k: v for k, v in best.summary().items()}
        if len(results) > 1:
            entry["sweep"] = [r.summary() for r in results]
        report["policies"][name] = entry
    report["targets"] = _targets(report["policies"], target)
    if "goodput" in runs and len(runs["goodput"]) > 1:
        tuned = headline(runs["goodput"], target).summary()
        report["targets_goodput_best_setting"] = _targets(
            {**report["policies"], "goodput": tuned}, target
        ) | {"setting": tuned["setting"]}
    report["workload"] = {
        "name": trace.name,
        "requests": len(trace),
        "duration_s": round(trace.duration_s, 1),
        "peak_rps_15s": round(float(trace.rate_per_window(15.0).max()), 2),
        "mean_rps": round(len(trace) / max(trace.duration_s, 1.0), 3),
        "data": trace.source or trace.name,
    }
    report["setup"] = {
        "model": s.spec.model.name,
        "accelerator": s.initial.accelerator,
        "tensor_parallel": s.initial.tensor_parallel,
        "slo": {"ttft_p95_ms": s.sim.slo.ttft_ms, "tpot_p95_ms": s.sim.slo.tpot_ms, "attainment": target},
        "start_delay_s": round(s.sim.start_delay_s, 1),
        "interval_s": s.sim.interval_s,
        "peak_replicas_planned": s.peak_replicas,
        "price_per_gpu_hour": s.sim.price_per_gpu_hour,
        "goodput_headroom": s.policy.headroom,
    }
    return report


def _targets(p: dict[str, dict[str, Any]], target: float) -> dict[str, Any]:
    """Issue 6's acceptance figures for the goodput policy, each with whether it is met."""
    if "goodput" not in p:
        return {}
    g = p["goodput"]
    out: dict[str, Any] = {
        "attainment": {"value": g["attainment"], "goal": target, "met": g["attainment"] >= target}
    }
    reaching = [
        s
        for name in ("hpa", "keda")
        if name in p
        for s in p[name].get("sweep", [p[name]])
        if s["attainment"] >= target
    ]
    if reaching:
        cheapest = min(s["gpu_hours"] for s in reaching)
        saving = 1.0 - g["gpu_hours"] / cheapest
        out["vs_cheapest_hpa_keda_at_target"] = {
            "saving": round(saving, 4),
            "goal": 0.25,
            "met": saving >= 0.25 and g["attainment"] >= target,
        }
    elif any(name in p for name in ("hpa", "keda")):
        # none reaches the target: goodput must not be dominated, i.e. beat the attainment of every setting
        # that uses no more GPU-hours than it does
        sweep = [s for name in ("hpa", "keda") if name in p for s in p[name].get("sweep", [p[name]])]
        cheaper = [s for s in sweep if s["gpu_hours"] <= g["gpu_hours"]]
        out["vs_hpa_keda_none_at_target"] = {
            "met": all(g["attainment"] > s["attainment"] for s in cheaper),
            "best_baseline_attainment": max(s["attainment"] for s in sweep),
            "note": "no HPA/KEDA setting reaches the target; met when goodput's attainment is higher than "
            "every setting using no more GPU-hours",
        }
    if "static" in p:
        ratio = g["gpu_hours"] / p["static"]["gpu_hours"]
        out["vs_static"] = {"ratio": round(ratio, 4), "goal": 0.75, "met": ratio <= 0.75}
    if "oracle" in p:
        ratio = g["gpu_hours"] / p["oracle"]["gpu_hours"]
        out["vs_oracle"] = {"ratio": round(ratio, 4), "goal_diurnal": 1.25, "met": ratio <= 1.25}
    return out
