"""CPU throughput and latency of the worker engine against Hugging Face transformers, in one run.

Offline: the same seeded workload (prompt lengths uniform 32-512, output lengths uniform 16-256, EOS
ignored, greedy) through (a) our engine, (b) transformers `generate` in static left-padded batches and
(c) transformers continuous batching where the installed version has it. Online: Poisson arrivals at 50%
and 90% of our measured capacity, with TTFT and TPOT percentiles.

    python -m bench.engine_cpu --json results/engine_cpu.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import torch

from bench import engine_common as common
from bench.engine_common import Workload, drain_continuous, generate_static, greedy
from goodput.worker_image import presets
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine

PRESET = "bench-small"


def workload(n: int, prompt_range: tuple[int, int], output_range: tuple[int, int], seed: int) -> Workload:
    return common.workload(PRESET, n, prompt_range, output_range, seed)


def run_ours(engine: LLMEngine, w: Workload) -> tuple[dict, list[list[int]]]:
    start = time.perf_counter()
    outputs = engine.generate(w.prompts, [greedy(n) for n in w.output_lens])
    elapsed = time.perf_counter() - start
    assert [len(o) for o in outputs] == w.output_lens
    stats = engine.stats()
    return {
        "seconds": elapsed,
        "output_tokens": w.output_tokens,
        "output_tokens_per_s": w.output_tokens / elapsed,
        "preemptions": stats.num_preemptions,
    }, outputs


def hf_model(seed: int) -> torch.nn.Module:
    import transformers

    config = presets.preset_config(PRESET)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    model.load_state_dict(presets.random_weights(config, seed))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = presets.BYTE_TOKENS["pad_token_id"]
    return model


def run_hf_static(model: torch.nn.Module, w: Workload, batch_size: int) -> dict:
    """Arrival-order batches, left padded, each running until its longest output is done."""
    start = time.perf_counter()
    generate_static(model, w, batch_size)
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "batch_size": batch_size,
        "output_tokens": w.output_tokens,
        "output_tokens_per_s": w.output_tokens / elapsed,
    }


def run_hf_continuous(model: torch.nn.Module, w: Workload, batch_tokens: int) -> dict | None:
    """transformers' own continuous batching (paged KV cache), per-request output lengths."""
    if not hasattr(model, "continuous_batching_context_manager"):
        return None
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    # Bounded like ours: the default sizes its KV cache from free memory (14 GB here).
    cb_cfg = ContinuousBatchingConfig(
        num_blocks=256, max_batch_tokens=batch_tokens, max_requests_per_batch=64
    )
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=max(w.output_lens), eos_token_id=None)
    gen_cfg.pad_token_id = presets.BYTE_TOKENS["pad_token_id"]
    start = time.perf_counter()
    with (
        torch.no_grad(),
        model.continuous_batching_context_manager(
            generation_config=gen_cfg, continuous_batching_config=cb_cfg, block=True
        ) as m,
    ):
        generated = drain_continuous(m, w)
    return common.continuous_result(w, generated, time.perf_counter() - start)


def parity(model: torch.nn.Module, w: Workload, ours: list[list[int]], n: int = 3, tokens: int = 16) -> bool:
    """Our batched outputs against transformers run one request at a time, without padding."""
    with torch.inference_mode():
        for prompt, out in list(zip(w.prompts, ours, strict=True))[:n]:
            k = min(tokens, len(out))
            ref = model.generate(
                input_ids=torch.tensor([prompt]), max_new_tokens=k, min_new_tokens=k, do_sample=False
            )
            if ref[0, len(prompt) :].tolist() != out[:k]:
                return False
    return True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_online(engine: LLMEngine, w: Workload, rate: float, seed: int) -> dict:
    """Poisson arrivals at `rate` requests/s through add_request while another thread steps the engine."""
    rng = random.Random(seed)
    first: dict[str, float] = {}
    done: dict[str, tuple[float, int, float]] = {}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if not engine.has_unfinished_requests():
                engine.wait_for_work(0.05)
                continue
            for out in engine.step():
                if out.first_token_time is not None:
                    first.setdefault(out.request_id, out.first_token_time)
                if out.finished:
                    done[out.request_id] = (time.monotonic(), out.num_output_tokens, out.arrival_time)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    start = time.monotonic()
    t = start
    for i, (prompt, n) in enumerate(zip(w.prompts, w.output_lens, strict=True)):
        t += rng.expovariate(rate)
        time.sleep(max(0.0, t - time.monotonic()))
        engine.add_request(f"online-{rate:.3f}-{i}", prompt, greedy(n))
    while len(done) < len(w.prompts):
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    stop.set()
    thread.join()
    ttft = [first[r] - arrival for r, (_, _, arrival) in done.items()]
    tpot = [(end - first[r]) / (n - 1) for r, (end, n, _) in done.items() if n > 1]
    return {
        "rate_rps": rate,
        "requests": len(done),
        "seconds": elapsed,
        "output_tokens_per_s": sum(n for _, n, _ in done.values()) / elapsed,
        "ttft_p50_ms": 1000 * percentile(ttft, 0.5),
        "ttft_p95_ms": 1000 * percentile(ttft, 0.95),
        "tpot_p50_ms": 1000 * percentile(tpot, 0.5),
        "tpot_p95_ms": 1000 * percentile(tpot, 0.95),
        "mean_ttft_ms": 1000 * statistics.fmean(ttft),
        "prefix_cache_hits_total": engine.stats().prefix_cache_hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="16 short requests: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every system measured")
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-online", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, prompts, outputs = (16, (32, 128), (16, 64)) if args.quick else (64, (32, 512), (16, 256))
    offline = workload(n, prompts, outputs, args.seed)
    config = EngineConfig(
        model=f"random:{PRESET}",
        max_num_seqs=64,
        max_num_batched_tokens=1024,
        max_model_len=1024,
        seed=args.seed,
    )
    engine = LLMEngine(config)
    engine.generate(workload(4, (16, 64), (4, 8), args.seed + 99).prompts, greedy(4))  # warm up
    ours, ours_outputs = run_ours(engine, offline)
    print(f"ours: {ours['output_tokens_per_s']:.1f} output tok/s ({ours['seconds']:.1f}s)", flush=True)
    result: dict = {
        "model": f"random:{PRESET}",
        "requests": n,
        "prompt_len_range": list(prompts),
        "output_len_range": list(outputs),
        "torch_threads": args.threads,
        "load_average_at_start": os.getloadavg(),
        "engine_config": {k: v for k, v in vars(config).items()},
        "ours": ours,
        "hf_static": None,
        "hf_continuous": None,
        "ratio_vs_static": None,
        "ratio_vs_continuous": None,
        "parity": None,
    }
    if not args.skip_hf:
        model = hf_model(args.seed)
        result["parity"] = parity(model, offline, ours_outputs)
        result["hf_static"] = run_hf_static(model, offline, args.hf_batch_size)
        result["ratio_vs_static"] = ours["output_tokens_per_s"] / result["hf_static"]["output_tokens_per_s"]
        print(f"hf static: {result['hf_static']['output_tokens_per_s']:.1f} tok/s", flush=True)
        try:
            result["hf_continuous"] = run_hf_continuous(model, offline, config.max_num_batched_tokens)
        except Exception as exc:  # a baseline that breaks is reported, not fatal
            result["hf_continuous_error"] = repr(exc)
        if result["hf_continuous"]:
            hf_cb = result["hf_continuous"]["output_tokens_per_s"]
            result["ratio_vs_continuous"] = ours["output_tokens_per_s"] / hf_cb
            print(f"hf continuous: {hf_cb:.1f} tok/s", flush=True)
    if not args.skip_online:
        capacity_rps = ours["output_tokens_per_s"] / statistics.fmean(offline.output_lens)
        result["online"] = {  # fresh prompts per rate, so no run is served from another's prefix cache
            f"{int(100 * f)}pct": run_online(
                engine, workload(n, prompts, outputs, args.seed + i), f * capacity_rps, i
            )
            for i, f in enumerate((0.5, 0.9), start=1)
        }
        result["online_capacity_rps"] = capacity_rps
        for k, v in result["online"].items():
            print(
                f"online {k}: ttft p50/p95 {v['ttft_p50_ms']:.0f}/{v['ttft_p95_ms']:.0f} ms, "
                f"tpot p50/p95 {v['tpot_p50_ms']:.1f}/{v['tpot_p95_ms']:.1f} ms",
                flush=True,
            )
    result["load_average_at_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ratio_vs_static", "ratio_vs_continuous", "parity")}))


if __name__ == "__main__":
    main()
