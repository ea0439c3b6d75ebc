"""Attention backends and decode CUDA-graph plumbing, checked on the CPU.

The Triton decode kernel runs under Triton's interpreter (TRITON_INTERPRET=1, which must be set before
triton is imported, hence a child process) against the PyTorch reference, alone and inside the engine.
The graphs' padding runs through the same static buffers with capture off, so only the capture itself
is left to the GPU tests (test_engine_gpu.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from goodput.worker_image.attention import prefill, reference_decode, resolve_backend
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.cuda_graphs import DecodeGraphs, graph_batch_sizes, pad_decode_batch, padded_size
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
TINY = dict(model="random:tiny", max_model_len=128, block_size=4, num_kv_blocks=128, cpu_threads=1)
# (dtype, heads, kv heads, head dim, block size, context lengths): GQA 7:1 like Qwen2.5-0.5B, plain
# multi-head, a head dim that is not a power of two, one-token and block-boundary contexts, and contexts
# long enough to be split (flash-decoding) and merged.
KERNEL_CASES = [
    ("float32", 14, 2, 64, 16, [1, 16, 17, 300]),
    ("bfloat16", 14, 2, 64, 16, [5, 129, 250]),
    ("float32", 4, 4, 48, 4, [3, 64, 65]),
    ("float32", 8, 2, 32, 8, [40]),
]


def random_paged(dtype: torch.dtype, heads: int, kv: int, hd: int, bs: int, lens: list[int], seed: int = 0):
    """Random q and caches, each sequence's blocks scattered over the pool in shuffled order."""
    gen = torch.Generator().manual_seed(seed)
    width = max(-(-n // bs) for n in lens)
    num_blocks = len(lens) * width + 3
    k_cache = torch.randn(kv, num_blocks, bs, hd, generator=gen).to(dtype)
    v_cache = torch.randn(kv, num_blocks, bs, hd, generator=gen).to(dtype)
    order = torch.randperm(num_blocks, generator=gen)
    tables = order[: len(lens) * width].view(len(lens), width)
    q = torch.randn(len(lens), heads, hd, generator=gen).to(dtype)
    return q, k_cache, v_cache, tables, torch.tensor(lens)


def kernel_errors() -> list[float]:
    """Largest |triton - reference| of each case (run in a child with the interpreter on)."""
    from goodput.worker_image.triton_decode import paged_decode

    errors = []
    for dtype_name, heads, kv, hd, bs, lens in KERNEL_CASES:
        q, kc, vc, tables, ctx = random_paged(getattr(torch, dtype_name), heads, kv, hd, bs, lens)
        ref = reference_decode(q.float(), kc.float(), vc.float(), tables, ctx, hd**-0.5)
        out = paged_decode(q, kc, vc, tables, ctx, hd**-0.5)
        assert out.dtype == q.dtype and out.shape == q.shape
        errors.append(float((out.float() - ref).abs().max()))
    return errors


def engine_outputs(prompts: list[list[int]]) -> dict[str, list[list[int]]]:
    """Greedy tokens of the Triton backend, eager and through padded graph buffers (child process)."""
    out = {}
    for graphs in (False, True):
        engine = LLMEngine(EngineConfig(**TINY, attention_backend="triton", max_num_batched_tokens=16))
        if graphs:
            runner = engine.runner
            runner.graphs = DecodeGraphs(
                runner.model, 6, 128, 4, runner.num_blocks, runner.device, capture=False
            )
        out[f"triton{'-graphs' if graphs else ''}"] = engine.generate(prompts, GREEDY)
    return out


def in_interpreter(function: str, *args: object) -> object:
    """Call a function of this file in a child process with Triton's interpreter on; JSON in and out."""
    pytest.importorskip("triton")
    script = (
        "import json, runpy, sys, torch\n"
        "torch.set_num_threads(1)\n"
        f"function = runpy.run_path({__file__!r})[{function!r}]\n"
        "print(json.dumps(function(*json.loads(sys.stdin.read()))))\n"
    )
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(args),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_triton_kernel_matches_reference_in_interpreter() -> None:
    errors = in_interpreter("kernel_errors")
    tolerances = [1e-4 if case[0] == "float32" else 2e-2 for case in KERNEL_CASES]  # bf16: output rounding
    assert all(e < tol for e, tol in zip(errors, tolerances, strict=True)), errors


@pytest.mark.parametrize(
    ("dtype", "group", "head_dim", "arch"),
    [("bf16", 7, 64, 90), ("bf16", 4, 128, 90), ("fp16", 1, 80, 80), ("fp32", 7, 64, 80)],
)
def test_triton_kernel_compiles_for_gpus(dtype: str, group: int, head_dim: int, arch: int) -> None:
    """The interpreter accepts code the compiler may not: build the kernel ahead of time for H100 (sm_90)
    and A100 (sm_80) with Triton's own ptxas, no GPU needed."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    from goodput.worker_image.triton_decode import _paged_decode_kernel, constants

    kinds = {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "tables_ptr": "*i64"}
    kinds |= {"ctx_ptr": "*i64", "out_ptr": "*fp32", "lse_ptr": "*fp32", "scale": "fp32"}
    names = _paged_decode_kernel.arg_names
    signature = {n: kinds.get(n, "constexpr" if n.isupper() else "i32") for n in names}
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    const = constants(group, head_dim, 16, torch_dtype)
    compiled = triton.compile(
        ASTSource(_paged_decode_kernel, signature, constexprs=const), target=GPUTarget("cuda", arch, 32)
    )
    assert compiled.asm["cubin"]


def test_engine_with_triton_backend_matches_reference(random_prompts) -> None:
    """Block tables, per-sequence contexts and GQA as the engine builds them, chunked prefill included;
    and the same through the graphs' padded buffers."""
    prompts = random_prompts([1, 5, 17, 33, 9], 256, seed=7)
    expected = LLMEngine(EngineConfig(**TINY, max_num_batched_tokens=16)).generate(prompts, GREEDY)
    got = in_interpreter("engine_outputs", prompts)
    assert got == {"triton": expected, "triton-graphs": expected}


def test_padded_graph_buffers_give_the_same_tokens(random_prompts) -> None:
    """Decode steps padded to a bucket (dummies writing to the sink block) change no real token."""
    prompts = random_prompts([3, 21, 8, 2, 13], 256, seed=8)
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (10, 7, 4, 9, 2)]
    config = EngineConfig(**TINY, max_num_seqs=6)
    eager = LLMEngine(config)
    expected = eager.generate(prompts, params)
    engine = LLMEngine(config)
    runner = engine.runner
    runner.graphs = DecodeGraphs(runner.model, 6, 128, 4, runner.num_blocks, runner.device, capture=False)
    replayed = []
    run = runner.graphs.run
    runner.graphs.run = lambda *a: replayed.append(len(a[0])) or run(*a)  # type: ignore[method-assign]
    assert engine.generate(prompts, params) == expected
    assert {3, 5} <= set(replayed)  # padded to the buckets of four and six
    real, sink = slice(0, runner.num_blocks), runner.num_blocks
    torch.testing.assert_close(runner.kv_cache[:, :, :, real], eager.runner.kv_cache[:, :, :, real])
    assert runner.kv_cache[:, :, :, sink].abs().sum() > 0 and eager.runner.kv_cache[:, :, :, sink].eq(0).all()


def test_prefill_after_context_matches_one_pass() -> None:
    """A chunk attending to cached earlier tokens equals the same rows of one causal pass."""
    gen = torch.Generator().manual_seed(3)
    heads, kv, hd, bs, n = 4, 2, 16, 4, 11
    q, k, v = (torch.randn(n, h, hd, generator=gen) for h in (heads, kv, kv))
    k_cache, v_cache = torch.zeros(kv, 5, bs, hd), torch.zeros(kv, 5, bs, hd)
    table = torch.tensor([3, 0, 4])
    for pos in range(n):
        k_cache[:, table[pos // bs], pos % bs], v_cache[:, table[pos // bs], pos % bs] = k[pos], v[pos]
    whole = prefill(q, k, v, k_cache, v_cache, 0, table, 0.25)
    tail = prefill(q[6:], k[6:], v[6:], k_cache, v_cache, 6, table, 0.25)
    torch.testing.assert_close(tail, whole[6:])


@pytest.mark.parametrize(
    ("backend", "device", "resolved"),
    [("auto", "cpu", "reference"), ("auto", "cuda", "triton"), ("reference", "cuda:1", "reference")],
)
def test_backend_resolution(backend: str, device: str, resolved: str) -> None:
    assert resolve_backend(backend, device) == resolved


def test_backend_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="attention_backend='flash': must be one of auto, reference, triton"):
        EngineConfig(model="random:tiny", attention_backend="flash")
    with pytest.raises(ValueError, match="attention_backend='triton': needs a CUDA device"):
        EngineConfig(model="random:tiny", attention_backend="triton")
    with pytest.raises(ValueError, match=r"gpu_memory_utilization=1\.5"):
        EngineConfig(model="random:tiny", gpu_memory_utilization=1.5)


@pytest.mark.parametrize(
    ("max_num_seqs", "sizes"),
    [
        (1, [1]),
        (6, [1, 2, 4, 6]),
        (16, [1, 2, 4, 8, 16]),
        (40, [1, 2, 4, 8, 16, 32, 40]),
        (64, [1, 2, 4, 8, 16, 32, 48, 64]),
        (10_000, [1, 2, 4, 8, *range(16, 513, 16)]),
    ],
)
def test_graph_batch_sizes(max_num_seqs: int, sizes: list[int]) -> None:
    assert graph_batch_sizes(max_num_seqs) == sizes


@pytest.mark.parametrize(("n", "size"), [(1, 1), (3, 4), (8, 8), (9, 16), (33, 40), (40, 40), (41, None)])
def test_padded_size(n: int, size: int | None) -> None:
    assert padded_size(n, [1, 2, 4, 8, 16, 32, 40]) == size


def test_pad_decode_batch_points_dummies_at_the_sink() -> None:
    batch = pad_decode_batch(
        ids=np.array([7, 8]),
        positions=np.array([4, 0]),
        slots=np.array([21, 12]),
        block_tables=np.array([[3, 5], [3, 0]]),
        size=4,
        width=3,
        sink_block=9,
        block_size=4,
    )
    assert batch.ids.tolist() == [7, 8, 0, 0]
    assert batch.positions.tolist() == [4, 0, 0, 0]
    assert batch.context_lens.tolist() == [5, 1, 1, 1]
    assert batch.slots.tolist() == [21, 12, 36, 36]
    assert batch.block_tables.tolist() == [[3, 5, 9], [3, 0, 9], [9, 9, 9], [9, 9, 9]]
