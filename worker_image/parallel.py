"""Tensor parallelism: one process per rank, Megatron-style sharded layers, and the rank 0 -> followers channel.

Rank 0 is the engine process. It spawns ranks 1..N-1, which load their weight shards and then follow:
rank 0 sends each step's scheduled batch down a pipe (a pipe, not a collective, so an idle follower never
times out), every rank runs the forward pass, and the layers meet in all-reduces (row-parallel outputs,
the vocabulary-parallel embedding) and one gather of the logits to rank 0, the only rank that samples.
Collectives time out, pipes break, and a watchdog notices dead children, so a lost rank is an error, not
a hang. With one rank every layer here is the plain single-device layer and nothing is communicated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable

    from worker_image.config import EngineConfig

log = logging.getLogger(__name__)
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


class ColumnParallelLinear(nn.Module):
    """Each rank holds a slice of the output features; the output stays sharded (no communication).
    Weights start uninitialized here and below: the loader assigns them, so construction costs nothing."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features // _world, in_features))
        self.bias = nn.Parameter(torch.empty(out_features // _world)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """Each rank holds a slice of the input features; partial outputs are summed, then the bias added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features // _world))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _world == 1:
            return F.linear(x, self.weight, self.bias)
        y = F.linear(x, self.weight)
        dist.all_reduce(y)
        return y if self.bias is None else y + self.bias


def vocab_shard(vocab: int) -> int:
    """Rows per rank of the embedding and LM head: the vocabulary split evenly, the last shard zero-padded."""
    return -(-vocab // _world)


class VocabParallelEmbedding(nn.Module):
    """Each rank looks up the ids in its slice of the vocabulary; the others contribute zeros to the sum."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_shard(num), dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if _world == 1:
            return F.embedding(ids, self.weight)
        start = _rank * self.weight.shape[0]
        local = ids - start
        outside = (local < 0) | (local >= self.weight.shape[0])
        h = F.embedding(local.masked_fill(outside, 0), self.weight).masked_fill(outside[:, None], 0)
        dist.all_reduce(h)
        return h


class ParallelLMHead(nn.Module):
    """Each rank scores its slice of the vocabulary; rank 0 gathers the full logits, the others get None."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.weight = nn.Parameter(torch.empty(vocab_shard(vocab), hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        logits = F.linear(x, self.weight)
        if _world == 1:
            return logits
        parts = [torch.empty_like(logits) for _ in range(_world)] if _rank == 0 else None
        dist.gather(logits, parts, dst=0)
        return torch.cat(parts, dim=-1)[:, : self.vocab] if parts is not None else None


def shard_state_dict(state: dict[str, torch.Tensor], nh: int, nkv: int, hd: int) -> dict[str, torch.Tensor]:
    """This rank's slices of full (fused) weights, matching the shapes of the parallel layers above."""
    if _world == 1:
        return state

    def rows(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        a, b = shard_range(t.shape[dim])
        return t.narrow(dim, a, b - a).clone()

    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            per = vocab_shard(t.shape[0])
            part = t[_rank * per : (_rank + 1) * per]
            out[name] = F.pad(part, (0, 0, 0, per - part.shape[0]))
        elif "qkv_proj" in name:
            q, k, v = t.split([nh * hd, nkv * hd, nkv * hd])
            out[name] = torch.cat([rows(q), rows(k), rows(v)])
        elif "gate_up_proj" in name:
            out[name] = torch.cat([rows(p) for p in t.chunk(2)])
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            out[name] = rows(t, dim=1)
        else:  # norms and row-parallel biases are replicated
            out[name] = t
    return out


class Followers:
    """Rank 0's handle on ranks 1..N-1: spawn them, send them steps, watch them, and stop them."""

    def __init__(self, target: Callable[..., None], config: EngineConfig, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.failure: str | None = None
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for r in range(1, config.tensor_parallel_size):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=target, args=(config, r, port, theirs), name=f"goodput-tp{r}", daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)
        self._stopping = False
        self._watchdog = threading.Thread(target=self._watch, name="goodput-tp-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        sentinels = {p.sentinel: p for p in self.procs}
        dead = [sentinels[s] for s in wait(list(sentinels))]
        for p in dead:
            p.join(1.0)  # its sentinel closes a moment before it can be reaped
        if not self._stopping:
            self.failure = ", ".join(f"{p.name} exited with code {p.exitcode}" for p in dead)
            log.error("tensor-parallel rank lost: %s; stopping the other ranks", self.failure)
            self.kill()

    def wait(self, what: str) -> None:
        """Block until every follower reports `what`; one that dies first is an error naming it."""
        for proc, pipe in zip(self.procs, self.pipes, strict=True):
            try:
                pipe.recv()
            except EOFError:
                proc.join(1.0)
                raise RankFailedError(
                    f"tensor-parallel rank lost: {proc.name} exited with code {proc.exitcode} before {what}"
                ) from None

    def check(self) -> None:
        if self.failure is not None:
            raise RankFailedError(f"tensor-parallel rank lost: {self.failure}")

    def failed(self, exc: BaseException) -> RankFailedError:
        """After a failed step: name the rank that died, if one did (the watchdog wakes at once), then stop
        every rank."""
        self._watchdog.join(timeout=1.0)
        self._stopping = True
        self.kill()
        return RankFailedError(
            f"tensor-parallel step failed ({self.failure or 'a rank stopped answering'}): {exc}"
        )

    def send(self, message: object) -> None:
        self.check()
        try:
            for pipe in self.pipes:
                pipe.send(message)
        except OSError as exc:
            raise RankFailedError(f"tensor-parallel rank unreachable: {exc}") from exc

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every follower to leave, then kill any that did not within the timeout."""
        self._stopping = True
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for p in self.procs:
            p.join(timeout_s)
        self.kill()
        for p in self.procs:
            p.join()
        for pipe in self.pipes:
            pipe.close()


def watch_parent() -> None:
    """In a follower: exit as soon as rank 0 is gone, even if it was killed without a word."""
    parent = os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=loop, name="goodput-tp-parent", daemon=True).start()
