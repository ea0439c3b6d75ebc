"""Sweep the Triton paged-decode kernel's choices (context tokens per iteration, context splits, warps,
pipeline stages) on qwen2.5-0.5b's attention shape, against the defaults the worker uses, each variant
checked against the PyTorch reference before it is timed: the data for tuning BLOCK_TOKENS, the split
heuristic (TARGET_PROGRAMS, MIN_SPLIT) and the launch settings in worker_image/triton_decode.py.

Not part of bench/gpu_check.sh (its six minutes are spoken for): a later device call of its own, about
two minutes on an H100. Each case's JSON is written as soon as it is measured.

    python bench/decode_tune.py --json $OUT/decode_tune.json
    TRITON_INTERPRET=1 python bench/decode_tune.py --cpu --json /tmp/decode_tune.json   # the code path
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from goodput.worker_image.attention import reference_decode

HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 14, 2, 64, 16  # qwen2.5-0.5b
GPU_CASES = [(1, 1024), (1, 8192), (16, 2048), (64, 1024), (256, 1024), (256, 2048)]  # (batch, context)
CPU_CASES = [(2, 40)]


@dataclass(frozen=True)
class Variant:
    block: int | None = None  # None: the worker's default for each
    splits: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None

    def launch(self) -> dict[str, int]:
        return {k: v for k, v in (("num_warps", self.num_warps), ("num_stages", self.num_stages)) if v}


def variants(context: int, cpu: bool) -> list[Variant]:
    if cpu:
        return [Variant(), Variant(block=16, splits=2, num_warps=2, num_stages=1)]
    grid = itertools.product((16, 32, 64, 128), (1, 2, 4, 8, 16, 32), (2, 4, 8), (1, 2, 3))
    return [Variant()] + [
        Variant(b, s, w, st)
        for b, s, w, st in grid
        if s * b <= max(context, b)  # every split has work
    ]


def inputs(batch: int, context: int, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random q and caches, every sequence `context` tokens long in blocks scattered over the pool."""
    gen = torch.Generator().manual_seed(seed)
    width = -(-context // BLOCK_SIZE)
    num_blocks = batch * width + 1
    cache_shape = (KV_HEADS, num_blocks, BLOCK_SIZE, HEAD_DIM)
    k = torch.randn(cache_shape, generator=gen).to(device, torch.bfloat16)
    v = torch.randn(cache_shape, generator=gen).to(device, torch.bfloat16)
    tables = torch.randperm(num_blocks, generator=gen)[: batch * width].view(batch, width).to(device)
    q = torch.randn(batch, HEADS, HEAD_DIM, generator=gen).to(device, torch.bfloat16)
    return q, k, v, tables, torch.full((batch,), context, device=device)


def median_ms(fn: Callable[[], object], cuda: bool) -> float:
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[1]


def measure_case(batch: int, context: int, device: str, cpu: bool) -> dict:
    """Every variant's median time and error against the reference; wrong ones are never 'best'."""
    from goodput.worker_image.triton_decode import paged_decode

    q, k, v, tables, ctx = inputs(batch, context, device)
    scale = HEAD_DIM**-0.5
    ref = reference_decode(q.float(), k.float(), v.float(), tables, ctx, scale)
    rows = []
    for var in variants(context, cpu):

        def run(var: Variant = var) -> torch.Tensor:
            return paged_decode(
                q, k, v, tables, ctx, scale, block=var.block, splits=var.splits, launch=var.launch()
            )

        try:
            error = float((run().float() - ref).norm() / ref.norm())
            rows.append(asdict(var) | {"rel_error": error, "ms": median_ms(run, not cpu)})
        except Exception as exc:  # a variant Triton cannot compile (too many registers, shared memory)
            rows.append(asdict(var) | {"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    kv_bytes = 2 * batch * context * KV_HEADS * HEAD_DIM * 2  # K and V, bf16, each read once
    good = [r for r in rows if "ms" in r and r["rel_error"] < 1e-2]
    default, best = rows[0], min(good, key=lambda r: r["ms"]) if good else None
    return {
        "batch": batch,
        "context": context,
        "kv_bytes": kv_bytes,
        "default": default,
        "best": best,
        "speedup_best_over_default": default["ms"] / best["ms"] if best and "ms" in default else None,
        "best_gb_s": kv_bytes / best["ms"] / 1e6 if best else None,
        "variants": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--cpu", action="store_true", help="tiny, in Triton's interpreter (TRITON_INTERPRET=1)"
    )
    args = parser.parse_args()
    if args.cpu and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("--cpu runs the kernel in Triton's interpreter: set TRITON_INTERPRET=1")
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("decode_tune.py needs a CUDA GPU and none is visible; --cpu runs a tiny version on the CPU")
    device = "cpu" if args.cpu else "cuda"
    result: dict = {
        "device": "cpu (interpreter)" if args.cpu else torch.cuda.get_device_name(),
        "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "block_size": BLOCK_SIZE},
        "dtype": "bfloat16",
        "cases": [],
    }
    for batch, context in CPU_CASES if args.cpu else GPU_CASES:
        case = measure_case(batch, context, device, args.cpu)
        result["cases"].append(case)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        best = case["best"] or {}
        print(
            f"batch {batch:4d} context {context:5d}: default {case['default'].get('ms', float('nan')):.4f} ms, "
            f"best {best.get('ms', float('nan')):.4f} ms {json.dumps({k: best.get(k) for k in asdict(Variant())})}",
            flush=True,
        )


if __name__ == "__main__":
    main()
