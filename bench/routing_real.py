"""Routing on the real local stack (issue 19, part b): the same prefix-heavy load through the plain Service
(kube-proxy picks a replica at random per connection) and through goodput's router, in one run.

The stack: the real node (kubelet + containerd + runc + CNI + kube-proxy, images from `make images`), goodput's
operator, and one InferenceService serving `random:bench-small` on `replicas` fixed CPU replicas with its router.

The load keeps the Mooncake conversation trace's prefix structure (Qin et al., Mooncake, FAST 2025; Apache-2.0):
the trace's multi-turn conversations (requests sharing their first two hash blocks: block 0 is everyone's
system prompt), the first `conversations` of them by arrival, every turn in trace order. Each 512-token hash
block becomes `block_tokens` token ids (16: one KV block of the worker), the same ids wherever the trace repeats
the block, so a later turn shares its earlier turns' prefix; prompts are clipped to the worker's context less
the output, outputs scaled by the same factor (at least one token). Arrivals are Poisson at `rps`, in the
trace's order. Each phase draws its own ids for the blocks (a salt), so the second phase finds nothing of the
first in the replicas' caches.

Hit rate: the workers' own counters (vllm:prefix_cache_hits / vllm:prefix_cache_queries, in tokens) over the
phase, summed over the replicas. TTFT: the client's, send to first streamed token.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Sequence

import numpy as np
from kubernetes.client import CoreV1Api

from bench.routing_simulation import MOONCAKE_BLOCK_TOKENS, load_mooncake
from e2e import loadgen, service
from e2e import operator as goodput
from e2e import router_stack as rs
from e2e.stack import running_stack
from goodput.worker_image.contract import MODEL_PRESETS, PREFIX_CACHE_HITS, PREFIX_CACHE_QUERIES, total

PRESET = "bench-small"
MAX_MODEL_LEN = 2048  # the worker's default context (the operator does not set it)
NAME = "prefix"
POLICY = service.FastPolicy()
SLO = {"ttftP95Ms": 5000.0, "tpotP95Ms": 1000.0, "attainment": 0.9}


def conversations(blocks: Sequence[Sequence[int]], count: int) -> list[int]:
    """Indices, in trace order, of every turn of the first `count` multi-turn conversations."""
    by_opening: dict[int, list[int]] = collections.defaultdict(list)
    for i, ids in enumerate(blocks):
        if len(ids) > 1:
            by_opening[ids[1]].append(i)
    multi = sorted((turns for turns in by_opening.values() if len(turns) > 1), key=lambda turns: turns[0])
    return sorted(i for turns in multi[:count] for i in turns)


def prefix_load(count: int, rps: float, block_tokens: int, salt: int, seed: int = 0) -> list[loadgen.Arrival]:
    """The scaled conversations as arrivals with their token ids (see the module's docstring)."""
    trace, blocks = load_mooncake()
    vocab = MODEL_PRESETS[PRESET]["vocab_size"]
    scale = block_tokens / MOONCAKE_BLOCK_TOKENS
    rng = np.random.default_rng(seed)
    at = 0.0
    arrivals = []
    for i in conversations(blocks, count):
        output = max(1, round(int(trace.output_tokens[i]) * scale))
        ids = [
            int(t)
            for block in blocks[i]
            for t in np.random.default_rng([salt, block]).integers(1, vocab, block_tokens)
        ][: MAX_MODEL_LEN - output]
        at += float(rng.exponential(1.0 / rps))
        arrivals.append(loadgen.Arrival(at, len(ids), output, tuple(ids)))
    return arrivals


def measure(
    count: int = 30, rps: float = 1.5, replicas: int = 3, block_tokens: int = 16
) -> dict[str, object]:
    """{"service" | "router": {"prefix_hit_rate", "ttft_p95_ms", ...}, "setting": {...}} from one stack."""
    out: dict[str, object] = {}
    key = uuid.uuid4().hex
    auth = {"Authorization": f"Bearer {key}"}
    with running_stack() as stack, goodput.installed(stack, POLICY):
        namespace = f"prefix-{uuid.uuid4().hex[:6]}"
        with stack.api_client() as client:
            core = CoreV1Api(client)
            core.create_namespace({"metadata": {"name": namespace}})
            core.create_namespaced_secret(
                namespace, {"metadata": {"name": "key"}, "stringData": {"key": key}}
            )
        manifest = service.sized_service(
            namespace, POLICY.name, SLO, name=NAME, source=f"random:{PRESET}",
            prompt_tokens=512, output_tokens=16, expected_rps=rps, max_replicas=replicas,
        )  # fmt: skip
        manifest["spec"]["scaling"]["minReplicas"] = replicas
        manifest["spec"]["worker"] = {"apiKeySecret": {"name": "key", "key": "key"}}
        service.apply(stack, rs.with_router(manifest, stack))
        service.wait_ready(stack, namespace, NAME, timeout=300)
        rs.wait_routed(stack, namespace, NAME, {"interactive": replicas}, timeout=300)
        workers = rs.workers(stack, namespace, NAME, "interactive")
        targets = {
            "service": rs.cluster_url(stack, namespace, f"{NAME}-interactive"),
            "router": rs.cluster_url(stack, namespace, NAME),
        }
        for salt, (phase, url) in enumerate(targets.items()):
            arrivals = prefix_load(count, rps, block_tokens, salt)
            hits, queries = (
                rs.total(workers, total(PREFIX_CACHE_HITS)),
                rs.total(workers, total(PREFIX_CACHE_QUERIES)),
            )
            target = url.removeprefix("http://")
            run = asyncio.run(
                loadgen.replay(arrivals, lambda target=target: [target], headers=auth, deadline_s=600)
            )
            hits = rs.total(workers, total(PREFIX_CACHE_HITS)) - hits
            queries = rs.total(workers, total(PREFIX_CACHE_QUERIES)) - queries
            summary = loadgen.summary(run.results)
            out[phase] = {
                "prefix_hit_rate": round(hits / queries, 4) if queries else 0.0,
                "ttft_p95_ms": round(summary["ttft_p95_s"] * 1000, 1) if summary["ttft_p95_s"] else None,
                "ttft_p50_ms": round(summary["ttft_p50_s"] * 1000, 1) if summary["ttft_p50_s"] else None,
                "requests": summary["requests"],
                "failed": summary["failed"],
            }
            print(f"{phase}: {out[phase]}", flush=True)
        prompts = [a.prompt_tokens for a in prefix_load(count, rps, block_tokens, 0)]
    out["setting"] = {
        "node": "real (kubelet + containerd + runc + CNI + kube-proxy)",
        "model": f"random:{PRESET}",
        "replicas": replicas,
        "router_pods": 2,
        "conversations": count,
        "requests": len(prompts),
        "prompt_tokens_mean": round(float(np.mean(prompts)), 1),
        "rps": rps,
        "block_tokens": block_tokens,
        "trace_block_tokens": MOONCAKE_BLOCK_TOKENS,
        "data": "Mooncake FAST'25 conversation trace: Qin et al., Mooncake, FAST 2025; Apache-2.0",
    }
    return out
