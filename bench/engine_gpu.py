"""GPU throughput of the worker engine beside Hugging Face transformers, its greedy parity with them, and
its batch-1 TPOT against the HBM roofline, in one run.

Workload as nano-vllm's benchmark: 256 sequences of random token ids, prompt and output lengths uniform
in [100, 1024], EOS ignored, greedy; the `qwen2.5-0.5b` preset (random weights) in bfloat16. Measured in
turn, each system alone on the GPU: (a) our engine; (b) greedy parity: our engine and transformers in
float32 (where rounding cannot flip a near-tie) on the first prompts, token for token; (c) transformers
continuous batching (its `generate_batch` machinery with paged SDPA and CUDA graphs, fed per-request
output lengths) on the same workload; (d) transformers static `generate` in left-padded batches, on the
first `--hf-static-requests` requests (it pads every batch to its longest output, so the whole workload
would not fit a short GPU lease). Then batch-1 TPOT of ours and of transformers, against the roofline:
the model's weight bytes over the device bandwidth, measured here by a large device-to-device copy.

The JSON is rewritten after each part with "complete": false until the end, so a run stopped by its
time limit still reports what it measured.

    python -m bench.engine_gpu --json bench/results/engine_gpu.json
    python -m bench.engine_gpu --smoke --json /tmp/engine_gpu_smoke.json   # tiny, on CPU: the code path
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig

from bench import engine_common as common
from bench.engine_common import (
    Workload,
    copy_bandwidth,
    drain_continuous,
    generate_static,
    greedy,
    synchronize,
)
from goodput.worker_image import presets
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine


@dataclass(frozen=True)
class Setup:
    preset: str
    dtype: str
    device: str
    requests: int
    prompt_range: tuple[int, int]
    output_range: tuple[int, int]
    hf_static_requests: int  # static generate runs on this many of the workload's first requests
    bs1_prompt: int
    bs1_output: int
    parity_requests: int
    parity_prompt: int  # each parity prompt is cut to this many tokens
    parity_output: int
    copy_bytes: int  # size of the buffer copied to measure bandwidth


FULL = Setup(
    "qwen2.5-0.5b", "bfloat16", "cuda", 256, (100, 1024), (100, 1024), 64, 512, 128, 4, 64, 32, 2 << 30
)
SMOKE = Setup("tiny", "float32", "cpu", 6, (8, 24), (4, 12), 4, 16, 8, 2, 12, 6, 16 << 20)


def workload(s: Setup, seed: int) -> Workload:
    return common.workload(s.preset, s.requests, s.prompt_range, s.output_range, seed)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def engine_config(
    s: Setup, dtype: str, max_num_seqs: int, seed: int, num_kv_blocks: int | None = None
) -> EngineConfig:
    """On a GPU the KV pool fills free memory unless `num_kv_blocks` is given."""
    return EngineConfig(
        model=f"random:{s.preset}",
        dtype=dtype,
        device=s.device,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=16384,
        max_model_len=max(s.prompt_range[1] + s.output_range[1], s.bs1_prompt + s.bs1_output),
        num_kv_blocks=num_kv_blocks or (None if s.device.startswith("cuda") else 512),
        seed=seed,
    )


def allocated_gib() -> float:
    """Device memory still held by tensors: after an engine is closed, what it failed to give back."""
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def run_ours(s: Setup, w: Workload, seed: int) -> tuple[dict, int]:
    """Throughput on the workload and batch-1 TPOT; also the bytes of weights a decode step reads."""
    engine = LLMEngine(engine_config(s, s.dtype, min(256, s.requests), seed))
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.runner.model.parameters())
    engine.generate(w.prompts[:4], greedy(8))  # warm-up: Triton kernels compile here
    synchronize(s.device)
    start = time.perf_counter()
    outputs = engine.generate(w.prompts, [greedy(n) for n in w.output_lens])
    synchronize(s.device)
    elapsed = time.perf_counter() - start
    assert [len(o) for o in outputs] == w.output_lens
    result = {
        "seconds": elapsed,
        "output_tokens": w.output_tokens,
        "output_tokens_per_s": w.output_tokens / elapsed,
        "num_kv_blocks": engine.runner.num_blocks,
        "attention_backend": engine.runner.backend,
        "cuda_graphs": engine.runner.graphs is not None,
        "preemptions": engine.stats().num_preemptions,
        "tpot_bs1_ms": 1000 * bs1_tpot(engine, w.prompts[0][: s.bs1_prompt], s.bs1_output),
        "decode_step_profile": decode_step_profile(engine, w),
    }
    engine.close()
    del engine
    free_memory()
    result["gib_still_allocated_after_close"] = allocated_gib()
    return result, weight_bytes


def bs1_tpot(engine: LLMEngine, prompt: list[int], n: int) -> float:
    """Seconds between consecutive output tokens of one request alone (first token excluded)."""
    engine.add_request("bs1", prompt, greedy(n))
    times = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            times.extend(time.perf_counter() for _ in out.new_token_ids)
    return (times[-1] - times[0]) / (len(times) - 1)


def decode_step_profile(engine: LLMEngine, w: Workload, steps: int = 16, top: int = 15) -> dict:
    """Where a decode step's host time goes at the full batch (up to 256): median step time without the
    profiler, then cProfile over as many steps, its top functions by own time per step. The sampler's
    fetch of the tokens (`tolist`) is the wait for the GPU; everything else is Python work the GPU
    waits for, which the tuning of the Python per step aims at."""
    batch, limit = min(256, len(w.prompts)), engine.config.max_model_len
    prompt_len = min(64, limit // 2)
    steps = min(steps, (limit - prompt_len - 4) // 2)
    for i in range(batch):
        engine.add_request(f"profile-{i}", w.prompts[i][:prompt_len], greedy(2 * steps + 4))
    engine.step()  # the prompts (at most 16384 tokens: one step)
    engine.step()  # the first decode step, outside the clock

    def timed_step() -> float:
        start = time.perf_counter()
        engine.step()
        return time.perf_counter() - start

    plain = [timed_step() for _ in range(steps)]
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        engine.step()
    profiler.disable()
    while engine.has_unfinished_requests():
        engine.step()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "batch": batch,
        "steps": steps,
        "step_ms_median": 1000 * statistics.median(plain),
        "top_functions_by_own_time": [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "own_ms_per_step": 1000 * own / steps,
                "cumulative_ms_per_step": 1000 * cumulative / steps,
                "calls_per_step": calls / steps,
            }
            for (file, line, name), (_, calls, own, cumulative, _) in rows
        ],
    }


def parity_prompts(s: Setup, w: Workload) -> list[list[int]]:
    return [p[: s.parity_prompt] for p in w.prompts[: s.parity_requests]]


def ours_float32(s: Setup, prompts: list[list[int]], seed: int) -> list[list[int]]:
    """Our greedy tokens in float32, batched (CUDA graphs included), for the parity check; a pool just
    large enough, so the check does not depend on the throughput engine's memory being back."""
    one = engine_config(s, "float32", 1, seed)
    blocks_per_seq = -(-one.max_model_len // one.block_size)
    engine = LLMEngine(engine_config(s, "float32", len(prompts), seed, len(prompts) * blocks_per_seq))
    tokens = engine.generate(prompts, greedy(s.parity_output))
    engine.close()
    del engine
    free_memory()
    return tokens


def parity(model: torch.nn.Module, s: Setup, prompts: list[list[int]], ours: list[list[int]]) -> dict:
    """transformers' greedy tokens, one unpadded request at a time, against ours."""
    mismatches = []
    with torch.inference_mode():
        for i, (prompt, mine) in enumerate(zip(prompts, ours, strict=True)):
            ids = torch.tensor([prompt], device=s.device)
            out = model.generate(
                input_ids=ids, max_new_tokens=s.parity_output, min_new_tokens=s.parity_output, do_sample=False
            )
            theirs = out[0, len(prompt) :].tolist()
            if theirs != mine:
                first = next((j for j, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
                mismatches.append({"request": i, "first_difference": first, "ours": mine, "hf": theirs})
    return {
        "greedy_parity": not mismatches,
        "dtype": "float32",
        "requests": len(prompts),
        "prompt_len": s.parity_prompt,
        "output_len": s.parity_output,
        "mismatches": mismatches,
    }


def hf_model(s: Setup, seed: int) -> torch.nn.Module:
    """The preset in transformers with the same random weights as ours, in float32 on the device."""
    config = presets.preset_config(s.preset)
    cls = transformers.Qwen2ForCausalLM if config["model_type"] == "qwen2" else transformers.LlamaForCausalLM
    config_cls = transformers.Qwen2Config if config["model_type"] == "qwen2" else transformers.LlamaConfig
    model = cls(config_cls(**config, attn_implementation="sdpa"))
    missing, unexpected = model.load_state_dict(presets.random_weights(config, seed), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # tied embeddings
    model.tie_weights()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = presets.BYTE_TOKENS["pad_token_id"]
    return model.to(device=s.device, dtype=torch.float32).eval()


def run_hf_continuous(s: Setup, model: torch.nn.Module, w: Workload) -> dict:
    """transformers' continuous batching with CUDA graphs on a GPU; without them if capturing fails there
    (the error is reported beside the figure)."""
    graphs = s.device.startswith("cuda")
    try:
        return hf_continuous(s, model, w, graphs)
    except Exception as exc:
        if not graphs:
            raise
        print(f"hf continuous with CUDA graphs failed ({exc!r}); again without", flush=True)
        free_memory()
        return hf_continuous(s, model, w, graphs=False) | {"cuda_graphs_error": repr(exc)}


def hf_continuous(s: Setup, model: torch.nn.Module, w: Workload, graphs: bool) -> dict:
    """Each request with its own output length; warmed up (graphs captured) before the clock starts."""
    cuda = s.device.startswith("cuda")
    cb = common.continuous_batching_config(
        use_cuda_graph=graphs,
        auto_switch_to_flash=False,  # paged SDPA, as asked; flash-attn is not installed anyway
        max_requests_per_batch=256,
        **({} if cuda else {"num_blocks": 64, "max_batch_tokens": 256, "page_size": 16}),
    )
    gen = GenerationConfig(do_sample=False, max_new_tokens=max(w.output_lens), eos_token_id=None)
    gen.pad_token_id = presets.BYTE_TOKENS["pad_token_id"]
    with (
        torch.no_grad(),  # its worker thread writes its tensors in place: inference mode would forbid that
        model.continuous_batching_context_manager(
            generation_config=gen, continuous_batching_config=cb, block=True, warmup=True
        ) as manager,
    ):
        synchronize(s.device)
        start = time.perf_counter()
        generated = drain_continuous(manager, w)
        elapsed = time.perf_counter() - start
    return common.continuous_result(w, generated, elapsed) | {"cuda_graphs": graphs}


def run_hf_static(s: Setup, model: torch.nn.Module, w: Workload, batch_size: int) -> dict:
    """Arrival-order batches of the first requests, left padded, each running until its longest output is
    done; then batch-1 TPOT from two generate lengths, the best of two runs each (their difference cancels
    the prefill)."""
    subset = Workload(w.prompts[: s.hf_static_requests], w.output_lens[: s.hf_static_requests])
    synchronize(s.device)
    start = time.perf_counter()
    generate_static(model, subset, batch_size, s.device)
    synchronize(s.device)
    elapsed = time.perf_counter() - start
    prompt = torch.tensor([w.prompts[0][: s.bs1_prompt]], device=s.device)

    def seconds(n: int) -> float:
        synchronize(s.device)
        t = time.perf_counter()
        model.generate(input_ids=prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        synchronize(s.device)
        return time.perf_counter() - t

    with torch.inference_mode():
        seconds(s.bs1_output)  # warm-up
        one, many = (min(seconds(n) for _ in range(2)) for n in (1, s.bs1_output))
    return {
        "seconds": elapsed,
        "requests": len(subset.prompts),
        "batch_size": batch_size,
        "output_tokens": subset.output_tokens,
        "output_tokens_per_s": subset.output_tokens / elapsed,
        "tpot_bs1_ms": 1000 * (many - one) / (s.bs1_output - 1),
    }


def setup_from(args: argparse.Namespace) -> Setup:
    s = SMOKE if args.smoke else FULL
    changes = {
        name: value
        for name in ("preset", "requests", "hf_static_requests", "bs1_output")
        if (value := getattr(args, name)) is not None
    }
    for name in ("requests", "hf_static_requests", "bs1_output"):
        if name in changes and changes[name] < (2 if name == "bs1_output" else 1):
            sys.exit(f"--{name.replace('_', '-')}={changes[name]}: too small")
    if "preset" in changes and changes["preset"] not in presets.PRESETS:
        sys.exit(f"--preset={changes['preset']}: known presets are {', '.join(presets.PRESETS)}")
    s = dataclasses.replace(s, **changes)
    return dataclasses.replace(s, hf_static_requests=min(s.hf_static_requests, s.requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="a tiny model and workload on the CPU")
    parser.add_argument("--preset", help="model preset (default qwen2.5-0.5b; tiny with --smoke)")
    parser.add_argument("--requests", type=int, help="workload size (default 256)")
    parser.add_argument("--hf-static-requests", type=int, help="requests static generate runs (default 64)")
    parser.add_argument("--bs1-output", type=int, help="tokens of the batch-1 TPOT runs (default 128)")
    parser.add_argument("--hf-batch-size", type=int, default=64, help="static generate's batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    s = setup_from(args)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("engine_gpu.py needs a CUDA GPU and none is visible; --smoke runs a tiny version on the CPU")
    if args.smoke:
        torch.set_num_threads(1)
    result: dict = {
        "complete": False,
        "device": torch.cuda.get_device_name() if s.device.startswith("cuda") else "cpu (smoke)",
        "model": f"random:{s.preset}",
        "dtype": s.dtype,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "requests": s.requests,
        "prompt_len_range": list(s.prompt_range),
        "output_len_range": list(s.output_range),
        "bs1_prompt_len": s.bs1_prompt,
        "bs1_output_len": s.bs1_output,
    }

    def save(**parts: object) -> None:
        result.update(parts)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))

    w = workload(s, args.seed)
    bandwidth = copy_bandwidth(s.device, s.copy_bytes)
    free_memory()
    ours, weight_bytes = run_ours(s, w, args.seed)
    roofline_ms = 1000 * weight_bytes / bandwidth
    save(
        ours=ours,
        weight_bytes=weight_bytes,
        copy_bandwidth_gb_s=bandwidth / 1e9,
        roofline_tpot_bs1_ms=roofline_ms,
        tpot_bs1_over_roofline=ours["tpot_bs1_ms"] / roofline_ms,
    )
    print(f"ours: {ours['output_tokens_per_s']:.0f} tok/s, bs1 TPOT {ours['tpot_bs1_ms']:.2f} ms", flush=True)
    prompts = parity_prompts(s, w)
    mine = ours_float32(s, prompts, args.seed)
    model = hf_model(s, args.seed)
    save(parity=parity(model, s, prompts, mine))
    print(f"greedy parity (float32): {result['parity']['greedy_parity']}", flush=True)
    model = model.to(getattr(torch, s.dtype))
    hf_cont = run_hf_continuous(s, model, w)
    save(
        hf_continuous=hf_cont,
        speedup_vs_hf_continuous=ours["output_tokens_per_s"] / hf_cont["output_tokens_per_s"],
    )
    print(f"hf continuous: {hf_cont['output_tokens_per_s']:.0f} tok/s", flush=True)
    hf_static = run_hf_static(s, model, w, args.hf_batch_size)
    save(
        hf_static=hf_static,
        speedup_vs_hf_static=ours["output_tokens_per_s"] / hf_static["output_tokens_per_s"],
        complete=True,
    )
    print(f"hf static: {hf_static['output_tokens_per_s']:.0f} tok/s", flush=True)
    print(json.dumps({k: result[k] for k in ("roofline_tpot_bs1_ms", "tpot_bs1_over_roofline")}))


if __name__ == "__main__":
    main()
