"""Tensor parallelism's process group: this process's rank and world size, joining and leaving the group,
and the few collectives outside the model.

Rank 0 is the engine process; it spawns ranks 1..N-1 (`tp_ranks.py`), every rank runs the forward pass of
Megatron-style sharded layers (`parallel_layers.py`), and only rank 0 samples. Collectives time out, so a
lost rank is an error, not a hang. With one rank nothing is communicated.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist

_rank, _world = 0, 1


class RankFailedError(RuntimeError):
    """A tensor-parallel rank died or a collective failed; the engine cannot go on."""


def rank() -> int:
    return _rank


def world_size() -> int:
    return _world


def init_group(rank_: int, world: int, port: int, device: str, timeout_s: float) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns this rank's device: on CUDA the GPU
    `rank_` places after the configured one (cuda:N), so ranks never share a GPU."""
    global _rank, _world
    dev = torch.device("cpu")
    if device.startswith("cuda"):
        dev = torch.device("cuda", (torch.device(device).index or 0) + rank_)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"invalid engine config: tensor_parallel_size={world} on {device}: rank {rank_} needs "
                f"{dev}, but only {torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(dev)
    dist.init_process_group(
        "nccl" if dev.type == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank_,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    _rank, _world = rank_, world
    return dev


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest of every rank's value, so sizes measured per rank (free memory) agree."""
    if _world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def destroy_group() -> None:
    global _rank, _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _rank, _world = 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_range(total: int) -> tuple[int, int]:
    """This rank's [start, end) of `total` rows split into equal parts (the caller checked divisibility)."""
    part = total // _world
    return _rank * part, (_rank + 1) * part


def vocab_shard(vocab: int) -> int:
    """Rows per rank of the embedding and LM head: the vocabulary split evenly, the last shard zero-padded."""
    return -(-vocab // _world)
