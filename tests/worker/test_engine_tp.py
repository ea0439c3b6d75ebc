"""Tensor parallelism over gloo on the CPU: the same greedy tokens as one rank, a lost rank is a prompt
error rather than a hang, and no process outlives the engine."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from goodput.worker_image import parallel
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.parallel import RankFailedError
from goodput.worker_image.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
BASE = dict(model="random:tiny", max_model_len=128, block_size=4, num_kv_blocks=128, cpu_threads=1)


def tp_engine(**kw: object) -> LLMEngine:
    return LLMEngine(EngineConfig(**(BASE | {"tensor_parallel_size": 2, "distributed_timeout_s": 10.0} | kw)))


def assert_no_children() -> None:
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []


def test_tp2_matches_tp1_per_architecture(hf_model_dir, random_prompts) -> None:
    """Qwen2's q/k/v biases and tied embeddings and Qwen3's q/k norms shard correctly too."""
    folder, _ = hf_model_dir
    prompts = random_prompts([3, 21, 8], 320, seed=6)
    kw = {"model": str(folder), "max_num_batched_tokens": 16}
    expected = LLMEngine(EngineConfig(**(BASE | kw))).generate(prompts, GREEDY)
    engine = tp_engine(**kw)
    try:
        assert engine.generate(prompts, GREEDY) == expected
    finally:
        engine.close()


@pytest.mark.parametrize("max_num_batched_tokens", [2048, 7], ids=["whole-prompts", "chunked-prefill"])
def test_tp2_matches_tp1(random_prompts, max_num_batched_tokens: int) -> None:
    prompts = random_prompts([1, 5, 17, 33, 9, 40], 256, seed=5)
    expected = LLMEngine(EngineConfig(**BASE)).generate(prompts, GREEDY)
    engine = tp_engine(max_num_batched_tokens=max_num_batched_tokens)
    try:
        assert engine.generate(prompts, GREEDY) == expected
    finally:
        engine.close()
    assert_no_children()


@pytest.mark.parametrize(
    ("sig", "why"),
    [(signal.SIGKILL, "goodput-tp1 exited with code -9"), (signal.SIGSTOP, "a rank stopped answering")],
    ids=["killed", "hung"],
)
def test_lost_rank_fails_fast_and_leaves_nothing(random_prompts, sig: signal.Signals, why: str) -> None:
    engine = tp_engine(distributed_timeout_s=2.0)
    try:
        (follower,) = engine.runner.followers.procs  # type: ignore[union-attr]
        engine.generate(random_prompts([6], 256), GREEDY)
        os.kill(follower.pid, sig)
        start = time.monotonic()
        with pytest.raises(RankFailedError, match=why):
            engine.generate(random_prompts([9, 3], 256, seed=1), GREEDY)
        assert time.monotonic() - start < 10
    finally:
        engine.close()
    assert_no_children()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
    except FileNotFoundError:
        return True


def test_followers_exit_when_rank0_is_killed() -> None:
    script = (
        "import sys, time; from goodput.worker_image.config import EngineConfig; from goodput.worker_image.engine import LLMEngine\n"
        "if __name__ == '__main__':\n"
        f"    e = LLMEngine(EngineConfig(**{BASE!r}, tensor_parallel_size=2))\n"
        "    print(e.runner.followers.procs[0].pid, flush=True); time.sleep(60)\n"
    )
    rank0 = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        follower = int(rank0.stdout.readline())  # type: ignore[union-attr]
        assert not _gone(follower)
    finally:
        rank0.kill()
        rank0.wait()
    deadline = time.monotonic() + 10
    while not _gone(follower) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(follower)


@pytest.mark.parametrize(("tp", "why"), [(3, "1, 2, 4 or 8"), (8, "attention heads"), (4, "key/value heads")])
def test_tp_must_divide_heads(tp: int, why: str) -> None:
    with pytest.raises(ValueError, match=rf"tensor_parallel_size={tp}: .*{why}"):
        EngineConfig(**(BASE | {"tensor_parallel_size": tp}))


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="would join a real NCCL group")
@pytest.mark.parametrize(("device", "needed"), [("cuda", "cuda:1"), ("cuda:3", "cuda:4")])
def test_cuda_rank_needs_its_own_gpu(device: str, needed: str) -> None:
    """Rank r runs on the r-th GPU after the configured one; one that is not there is a clear error."""
    visible = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"rank 1 needs {needed}, but only {visible} GPUs are visible"):
        parallel.init_group(1, 2, 0, device, 1.0)
    assert parallel.world_size() == 1
