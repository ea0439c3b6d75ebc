"""The GPU path, on a GPU: the compiled Triton kernel against the reference in bf16/fp16/fp32, greedy
tokens through captured CUDA graphs equal to eager ones and to transformers, no host sync inside the
forward pass, the KV pool sized from free memory, and tensor parallelism over NCCL.

Skipped where CUDA is absent, except in the GPU check's rehearsal (bench/gpu_check.sh --dry-run sets
GOODPUT_GPU_TESTS_ON_CPU=1 and TRITON_INTERPRET=1): then the same tests run on the CPU with short
contexts, so that a broken test or API is found before a scarce GPU lease, and only what exists on a GPU
alone (graph capture, the sync detector, free device memory, NCCL) is left out, each said so. The CPU
checks proper of the same code live in test_engine_attention.py and test_engine_kv_sizing.py."""

from __future__ import annotations

import contextlib
import os
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.sampling import SamplingParams

CUDA = torch.cuda.is_available()
REHEARSAL = not CUDA and os.environ.get("GOODPUT_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.skipif(
    not (CUDA or REHEARSAL), reason="needs a CUDA GPU (GOODPUT_GPU_TESTS_ON_CPU=1 rehearses on the CPU)"
)
gpu_only = pytest.mark.skipif(not CUDA, reason="rehearsal on the CPU: exists on a GPU only")
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
REHEARSAL_GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)  # the interpreter is slow
BASE = dict(model="random:tiny", device=DEVICE, max_model_len=256, block_size=16, num_kv_blocks=256)
# Context lengths: one token, block boundaries, long enough to be split (flash-decoding) and merged;
# the interpreter of the rehearsal is slow, so it gets short ones.
KERNEL_LENS = [1, 7, 16, 17, 200, 1000, 2047, 33] if CUDA else [1, 17, 70]


def engine(**kw: object) -> LLMEngine:
    return LLMEngine(EngineConfig(**(BASE | kw)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(("heads", "kv", "hd", "bs"), [(14, 2, 64, 16), (32, 8, 128, 16), (8, 8, 80, 32)])
def test_triton_kernel_matches_reference(dtype: torch.dtype, heads: int, kv: int, hd: int, bs: int) -> None:
    if REHEARSAL and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("the CPU rehearsal runs the kernel in Triton's interpreter: set TRITON_INTERPRET=1")
    random_paged = runpy.run_path(str(Path(__file__).with_name("test_engine_attention.py")))["random_paged"]
    from goodput.worker_image.attention import reference_decode
    from goodput.worker_image.triton_decode import paged_decode

    q, kc, vc, tables, ctx = (t.to(DEVICE) for t in random_paged(dtype, heads, kv, hd, bs, KERNEL_LENS))
    ref = reference_decode(q.float(), kc.float(), vc.float(), tables, ctx, hd**-0.5)
    out = paged_decode(q, kc, vc, tables, ctx, hd**-0.5)
    assert out.dtype == dtype and out.shape == q.shape
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


def test_cuda_graph_replay_gives_eager_tokens(random_prompts) -> None:
    prompts = random_prompts([1, 5, 17, 33, 9, 60, 3, 120], 512, seed=11)
    params = [
        SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (16, 3, 9, 12, 1, 7, 16, 5)
    ]
    for dtype in ("float32", "bfloat16"):
        eager = engine(dtype=dtype, max_num_seqs=8, enforce_eager=True)
        graphed = engine(dtype=dtype, max_num_seqs=8)
        assert eager.runner.graphs is None
        assert (graphed.runner.graphs is not None) == CUDA  # the CPU has no graphs to capture
        assert graphed.generate(prompts, params) == eager.generate(prompts, params), dtype


@contextlib.contextmanager
def sync_is_an_error() -> Iterator[None]:
    """On a GPU, any call that makes the host wait for the device raises inside this block."""
    if not CUDA:  # the detector exists on a GPU only; the rehearsal runs the rest of the test
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("enforce_eager", [False, True], ids=["graphs", "eager"])
def test_forward_never_waits_for_the_device(random_prompts, enforce_eager: bool) -> None:
    """Uploads, forward pass and logits only queue work (synchronising calls raise in this mode); the
    sampler's fetch of the tokens is the step's one wait. Mixed prefill/decode and decode-only steps."""
    e = engine(dtype="bfloat16", enforce_eager=enforce_eager, max_num_batched_tokens=16)
    for i, p in enumerate(random_prompts([3, 30, 7], 512, seed=12)):
        e.add_request(str(i), p, GREEDY)
    forward, steps = e.runner._forward, []

    def checked(step):  # type: ignore[no-untyped-def]
        steps.append(step)
        with sync_is_an_error():
            return forward(step)

    e.runner._forward = checked  # type: ignore[method-assign]
    while e.has_unfinished_requests():
        e.step()
    assert any(s.prefills and s.decodes for s in steps), "no mixed prefill/decode step was checked"
    assert any(not s.prefills for s in steps), "no decode-only step was checked"
    assert any(s.graph for s in steps) == (CUDA and not enforce_eager)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_greedy_parity_with_transformers_on_gpu(
    hf_model_dir, random_prompts, hf_greedy, backend: str
) -> None:
    folder, model = hf_model_dir
    lengths, params = ([1, 5, 17, 33, 9, 60], GREEDY) if CUDA else ([1, 17, 60], REHEARSAL_GREEDY)
    prompts = random_prompts(lengths, 320)
    expected = [hf_greedy(model, p, params.max_tokens) for p in prompts]
    e = engine(model=str(folder), attention_backend=backend, max_num_batched_tokens=16)
    assert e.generate(prompts, params) == expected


@gpu_only
def test_kv_pool_fills_free_memory() -> None:
    free_before, total = torch.cuda.mem_get_info()
    e = engine(num_kv_blocks=None, gpu_memory_utilization=0.5, max_model_len=1024)
    pool = e.runner.kv_cache.numel() * e.runner.kv_cache.element_size()
    assert pool < 0.5 * total
    assert pool > 0.5 * total - (total - free_before) - 2**30  # at most the weights and a warm-up peak below
    assert e.generate([[5] * 300], GREEDY)[0]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tp2_over_nccl_matches_tp1(random_prompts) -> None:
    prompts = random_prompts([1, 5, 17, 33, 9, 40], 256, seed=5)
    expected = engine(dtype="float32").generate(prompts, GREEDY)
    tp = engine(dtype="float32", tensor_parallel_size=2)
    try:
        assert tp.runner.device == torch.device("cuda", 0)
        assert tp.generate(prompts, GREEDY) == expected
    finally:
        tp.close()
