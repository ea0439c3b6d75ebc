"""Routing in simulation (issue 19, part a): random vs least outstanding work vs prefix-aware routing on a fixed
fleet, through the simulator's routing hook (`policies.routing.SimulatedRouting`); then random vs prefix-aware
with goodput's autoscaler in the loop (GPU-hours at the SLO), on the Mooncake trace. The three are the router's
policies: each holds a request in the router's queue while every replica is at its bound. Beside them,
"service" replays the same fleet without the router, as a Kubernetes Service spreads requests (at random,
whatever the replicas' load, no queue): what a client gets today.

The fleet is the planner's plan for the trace's busiest 15 s (as `policies.compare.setup` provisions every
simulation benchmark), scaled by `fleet_fraction`; each replica's prefix cache holds its KV pool in blocks
of the trace's 512 tokens. For scale, the fixed-fleet report gives the hit rate of one cache as large as the
whole fleet's, evicting as a replica does (what routing could reach if the replicas' caches acted as one), and
of an unbounded cache.

Data: Mooncake FAST'25 conversation trace (Qin et al., FAST 2025; Apache-2.0), with prefix-block hashes; Azure
LLM inference trace 2023, code (Patel et al., Splitwise, ISCA 2024; CC-BY 4.0), which has none (its prefix
routing can only balance load).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.autoscale_suite import INTERACTIVE_SLO, LONG_CONTEXT_SLO
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.baselines import Static
from goodput.policies.compare import (
    GoodputController,
    Pinned,
    ServiceShape,
    _p50_p95,
    benchmark_service,
    configuration_of,
    engine_of,
)
from goodput.policies.perfmodel import planned_model
from goodput.policies.plancache import PlanCache
from goodput.policies.prefill_bound import tier_prefill_bounds
from goodput.policies.prefix_cache import PrefixCache
from goodput.policies.routing import KINDS, RoutingKind, RoutingPolicy, SimulatedRouting
from goodput.policies.simulator import SimConfig, SLOTarget, StepProfile, simulate
from goodput.policies.types import Candidate, Load, ScalerState
from goodput.policies.workloads import AZURE_CODE_TRACE, MOONCAKE_CONVERSATION_TRACE, Trace, load_csv

MOONCAKE_BLOCK_TOKENS = 512
SERVICE = "service"  # the report's name for the fleet behind a Kubernetes Service, without the router
# TTFT p95 targets, the autoscale suite's: the code service's interactive 1 s; 5 s for the conversation trace,
# whose prompts reach 126k tokens (p95 40k) and whose prefill alone exceeds 1 s on one H100
CODE_TTFT_MS = INTERACTIVE_SLO[0]
MOONCAKE_TTFT_MS = LONG_CONTEXT_SLO[0]
CITATIONS = {
    "mooncake": "Mooncake FAST'25 conversation trace: Qin et al., Mooncake, FAST 2025; Apache-2.0",
    "code": "Azure LLM inference trace 2023 (code): Patel et al., Splitwise, ISCA 2024; CC-BY 4.0",
}


def load_mooncake(path: Path = MOONCAKE_CONVERSATION_TRACE) -> tuple[Trace, list[list[int]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["timestamp"])
    trace = Trace(
        "mooncake",
        np.array([r["timestamp"] / 1000.0 for r in rows]),
        np.array([r["input_length"] for r in rows]),
        np.array([max(r["output_length"], 1) for r in rows]),
    )
    return trace, [list(r["hash_ids"]) for r in rows]


def fleet(
    trace: Trace, ttft_ms: float, seed: int = 0, shape: ServiceShape = ServiceShape()
) -> tuple[SimConfig, Candidate, InferenceServiceSpec]:
    """The simulated replica and the planner's replica count for the trace's busiest 15 s (compare.setup's
    provisioning, with the TTFT target given: long-context chat cannot meet the code service's 1 s), on
    the configurations `shape` allows (by default one H100 per replica)."""
    peak_rps = float(trace.rate_per_window(15.0).max())
    spec = benchmark_service(
        peak_rps,
        prompt_tokens=_p50_p95(trace.prompt_tokens),
        output_tokens=_p50_p95(trace.output_tokens),
        shape=shape,
    )
    spec = spec.model_copy(update={"slo": spec.slo.model_copy(update={"ttft_p95_ms": ttft_ms})})
    load = Load(rps=peak_rps, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens)
    plan = planner.plan(spec, load, SLOPolicySpec(), 1.0, 1.0).chosen
    if plan is None:
        raise ValueError(f"no feasible plan for {trace.name} at TTFT p95 {ttft_ms:g} ms")
    model = planned_model(spec.model, plan)
    sim = SimConfig(
        profile=StepProfile.from_model(model, plan.max_batch, plan.chunk_tokens),
        engine=engine_of(plan),
        slo=SLOTarget(ttft_ms=ttft_ms, tpot_ms=spec.slo.tpot_p95_ms or 0.0, attainment=spec.slo.attainment),
        gpus_per_replica=plan.tensor_parallel,
        initial_replicas=plan.replicas,
        seed=seed,
    )
    return sim, plan, spec


def routing_for(
    name: str,
    spec: InferenceServiceSpec,
    plan: Candidate,
    blocks: Sequence[Sequence[int]],
    cache_blocks: int,
    seed: int,
) -> SimulatedRouting:
    """The simulated routing a report row names: one of the router's policies with the bounds the operator
    gives the router for `plan` (its max batch and prefill bound), or SERVICE."""
    kind: RoutingKind = "random" if name == SERVICE else name  # type: ignore[assignment]
    policy = RoutingPolicy(
        kind=kind,
        max_requests=plan.max_batch,
        max_prefill_tokens=tier_prefill_bounds(spec, plan)[plan.tier],
        block_tokens=MOONCAKE_BLOCK_TOKENS,
    )
    return SimulatedRouting(policy, blocks, cache_blocks, seed=seed, service=name == SERVICE)


def cache_hit_rate(blocks: Sequence[Sequence[int]], capacity_blocks: int) -> float:
    """The block hit rate of one prefix cache of `capacity_blocks` that every request goes through."""
    cache, hit, total = PrefixCache(capacity_blocks), 0, 0
    for prompt in blocks:
        hit += cache.insert(prompt)
        total += len(prompt)
    return hit / total if total else 0.0


def compare(
    trace: Trace,
    blocks: Sequence[Sequence[int]],
    ttft_ms: float,
    fleet_fraction: float = 1.0,
    seed: int = 0,
) -> dict[str, object]:
    """The same fixed fleet under each routing kind."""
    sim, plan, spec = fleet(trace, ttft_ms, seed)
    planned = plan.replicas
    replicas = max(1, math.ceil(planned * fleet_fraction))
    cache_blocks = sim.profile.kv_capacity_tokens // MOONCAKE_BLOCK_TOKENS
    out: dict[str, object] = {
        "replicas": replicas,
        "planned_replicas": planned,
        "engine": {"max_batch": sim.engine.max_batch, "chunk_tokens": sim.engine.chunk_tokens},
        "router_max_prefill_tokens": tier_prefill_bounds(spec, plan)[plan.tier],
        "cache_blocks_per_replica": cache_blocks,
        "slo": {"ttft_p95_ms": sim.slo.ttft_ms, "tpot_p95_ms": sim.slo.tpot_ms},
    }
    if any(blocks):
        total_blocks = sum(len(b) for b in blocks)
        out["hit_rate_one_fleet_cache"] = round(cache_hit_rate(blocks, replicas * cache_blocks), 4)
        out["hit_rate_unbounded_cache"] = round(cache_hit_rate(blocks, total_blocks), 4)
    for kind in (SERVICE, *KINDS):
        routing = routing_for(kind, spec, plan, blocks, cache_blocks, seed)
        result = simulate(trace, Static(replicas), replace(sim, initial_replicas=replicas, routing=routing))
        out[kind] = {
            "prefix_hit_rate": round(routing.hit_rate, 4),
            "ttft_p50_ms": round(float(np.nanpercentile(result.ttft_ms, 50)), 1),
            "ttft_p95_ms": round(result.ttft_p95_ms, 1),
            "tpot_p50_ms": round(float(np.nanpercentile(result.tpot_ms, 50)), 2),
            "tpot_p95_ms": round(result.tpot_p95_ms, 2),
            "attainment": round(result.attainment, 4),
        }
    return out


def autoscaled(
    trace: Trace,
    blocks: Sequence[Sequence[int]],
    ttft_ms: float,
    seed: int = 0,
    shape: ServiceShape = ServiceShape(),
) -> dict[str, dict[str, float]]:
    """GPU-hours and attainment with goodput's autoscaler in the loop, behind a Service and behind the router's
    random and prefix-aware routing.

    The fleet keeps the configuration the planner chose for the peak (`Pinned`, as in the autoscale suite): the
    simulator actuates replicas and engine knobs, not a rollout to another TP degree."""
    sim, plan, spec = fleet(trace, ttft_ms, seed, shape)
    cache_blocks = sim.profile.kv_capacity_tokens // MOONCAKE_BLOCK_TOKENS
    out = {}
    for kind in (SERVICE, "random", "prefix"):
        routing = routing_for(kind, spec, plan, blocks, cache_blocks, seed)
        controller = GoodputController(
            spec, SLOPolicySpec(), plan, ScalerState(), Pinned(PlanCache(), configuration_of(plan))
        )
        result = simulate(trace, controller, replace(sim, routing=routing))
        out[kind] = {
            "gpu_hours": round(result.gpu_hours, 2),
            "attainment": round(result.attainment, 4),
            "prefix_hit_rate": round(routing.hit_rate, 4),
            "ttft_p95_ms": round(result.ttft_p95_ms, 1),
            "tensor_parallel": plan.tensor_parallel,
        }
    return out


def over_seeds(runs: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each routing kind's figures as their mean over the seeds' runs (a random router's fleet varies by seed)."""
    return {
        kind: {key: round(float(np.mean([run[kind][key] for run in runs])), 4) for key in runs[0][kind]}
        for kind in runs[0]
    }


def simulation(fleet_fraction: float = 1.0, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, object]:
    """The report's "simulation" part: a fixed fleet, both traces, one run per seed (the seed draws the random
    router's and the Service's choices and the simulated requests' noise). Each kind's figures are their mean
    over the seeds, each seed's are kept under "seeds"."""
    mooncake, blocks = load_mooncake()
    code = load_csv(AZURE_CODE_TRACE)
    out: dict[str, object] = {}
    for name, trace, trace_blocks, ttft_ms in (
        ("mooncake", mooncake, blocks, MOONCAKE_TTFT_MS),
        ("code", code, [[] for _ in range(len(code))], CODE_TTFT_MS),
    ):
        runs = [compare(trace, trace_blocks, ttft_ms, fleet_fraction, seed) for seed in seeds]
        kinds = [{kind: run[kind] for kind in (SERVICE, *KINDS)} for run in runs]
        setting = {key: value for key, value in runs[0].items() if key not in kinds[0]}
        out[name] = {
            **setting,
            **over_seeds(kinds),  # type: ignore[arg-type]
            "seeds": {str(seed): run for seed, run in zip(seeds, kinds, strict=True)},
        }
    out["data"] = CITATIONS
    return out


def autoscaled_part(
    seeds: Sequence[int] = (0, 1, 2), shape: ServiceShape = ServiceShape()
) -> dict[str, object]:
    """The report's "autoscaled" part: the Mooncake trace under goodput's autoscaler, one run per seed (the
    seed draws the random router's choices and the simulated requests' noise); each kind's figures are the mean
    over the seeds, each seed's run is kept under "seeds". On one H100 per replica (the default `shape`) about
    1 % of its prompts cannot meet the TTFT target at any load; with the TP degree open the planner picks one
    that serves them."""
    mooncake, blocks = load_mooncake()
    runs = [autoscaled(mooncake, blocks, MOONCAKE_TTFT_MS, seed, shape) for seed in seeds]

    def saved(baseline: str) -> dict[str, float]:
        shares = [1 - run["prefix"]["gpu_hours"] / run[baseline]["gpu_hours"] for run in runs]
        return {"mean": round(float(np.mean(shares)), 4), "least": round(min(shares), 4)}

    return {
        **over_seeds(runs),
        "prefix_gpu_hours_saved": saved("random"),
        "prefix_gpu_hours_saved_vs_service": saved(SERVICE),
        "seeds": {str(seed): run for seed, run in zip(seeds, runs, strict=True)},
    }
