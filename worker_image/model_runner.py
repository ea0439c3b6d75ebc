"""Owns the model, the KV block pool and the sampler; turns a scheduled batch into one forward pass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from worker_image import parallel
from worker_image.config import EngineConfig
from worker_image.loader import DTYPES, load_model
from worker_image.model import AttnMetadata, DecodeGroup, PrefillChunk
from worker_image.sampler import Sampler, SamplerOutput
from worker_image.sequence import Sequence

DECODE_GROUP_SIZE = 16  # decodes sorted by length and gathered in groups, so padding stays small


def cpu_quota() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a pod's CPU limit)."""
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return n if quota == "max" else max(1, min(n, int(quota) // int(period)))
    except (OSError, ValueError):
        return n


@dataclass
class ScheduledSeq:
    """What the forward pass needs of one scheduled sequence: small enough to send to the other TP ranks."""

    index: int  # position in the scheduled batch
    tokens: list[int]  # the tokens computed this step
    num_computed_tokens: int
    block_table: list[int]
    samples: bool  # the step reaches the end of the sequence, so its last logits are sampled

    @classmethod
    def of(cls, index: int, seq: Sequence, n: int) -> ScheduledSeq:
        c = seq.num_computed_tokens
        return cls(index, seq.token_ids[c : c + n], c, seq.block_table, c + n == len(seq))


@dataclass
class StepInputs:
    ids: list[int] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    slots: list[np.ndarray] = field(default_factory=list)
    meta: AttnMetadata = field(
        default_factory=lambda: AttnMetadata(slot_mapping=torch.empty(0, dtype=torch.long))
    )
    sample_idx: list[int] = field(default_factory=list)  # rows of the flat batch whose logits are sampled
    sampled: list[int] = field(default_factory=list)  # scheduled-batch index of each sampled row


class ModelRunner:
    """Rank 0 (the engine's) runs scheduled batches; with tensor parallelism it also spawns and drives the
    other ranks, each a ModelRunner in `follow`."""

    def __init__(self, config: EngineConfig, rank: int = 0, port: int = 0) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.followers: parallel.Followers | None = None
        if self.device.type == "cpu":
            torch.set_num_threads(config.cpu_threads or min(torch.get_num_threads(), cpu_quota()))
        try:
            self._load(rank, port)
        except BaseException:
            self.close()
            raise

    def _load(self, rank: int, port: int) -> None:
        config, tp = self.config, self.config.tensor_parallel_size
        if tp > 1:
            if rank == 0:
                port = parallel.free_port()
                self.followers = parallel.Followers(follow, config, port)
                self.followers.wait("started")  # their imports do not count against the rendezvous timeout
            self.device = parallel.init_group(rank, tp, port, config.device, config.distributed_timeout_s)
        self.model, self.tokenizer, self.model_config = load_model(
            config.model, config.dtype, str(self.device), config.max_model_len, config.seed
        )
        mc, bs = self.model_config, config.block_size
        kv_heads = mc.num_kv_heads // tp
        bytes_per_block = 2 * mc.num_layers * kv_heads * bs * mc.head_dim * DTYPES[config.dtype].itemsize
        self.num_blocks = config.num_kv_blocks or config.kv_cache_memory_mb * 2**20 // bytes_per_block
        if self.num_blocks * bs < config.max_model_len:
            raise ValueError(
                f"invalid engine config: num_kv_blocks={self.num_blocks} (kv_cache_memory_mb="
                f"{config.kv_cache_memory_mb}) holds {self.num_blocks * bs} tokens, fewer than "
                f"max_model_len={config.max_model_len}"
            )
        shape = (2, mc.num_layers, kv_heads, self.num_blocks, bs, mc.head_dim)
        self.kv_cache = torch.zeros(shape, dtype=DTYPES[config.dtype], device=self.device)
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
        if self.followers is not None:
            self.followers.wait("ready")  # however long they take to load, the first step will not time out
        self.sampler = Sampler(config.device, config.seed)

    def run(self, scheduled: list[tuple[Sequence, int]]) -> tuple[list[Sequence], SamplerOutput | None]:
        """One forward pass; returns the sequences that reached their end (and so sample) and their tokens."""
        batch = [ScheduledSeq.of(i, seq, n) for i, (seq, n) in enumerate(scheduled)]
        step = self._prepare(batch)
        if self.followers is None:
            logits = self._forward(step)
        else:
            try:
                self.followers.send(batch)
                logits = self._forward(step)
            except parallel.RankFailedError:
                raise
            except Exception as exc:
                raise self.followers.failed(exc) from exc
        if logits is None:
            return [], None
        sampling = [scheduled[i][0] for i in step.sampled]
        return sampling, self.sampler(logits, sampling)

    @torch.inference_mode()
    def _forward(self, step: StepInputs) -> torch.Tensor | None:
        """Logits of the sampled rows (on rank 0; None elsewhere or when no row samples)."""
        hidden = self.model(self._tensor(step.ids), self._tensor(np.concatenate(step.positions)), step.meta)
        if not step.sample_idx:
            return None
        return self.model.logits(hidden[self._tensor(np.array(step.sample_idx))])

    def close(self) -> None:
        """Stop the other tensor-parallel ranks and leave the process group; safe to call twice."""
        if self.followers is not None:
            self.followers.stop()
            self.followers = None
        if self.config.tensor_parallel_size > 1:
            parallel.destroy_group()

    def _prepare(self, batch: list[ScheduledSeq]) -> StepInputs:
        """Flatten the batch: single-token sequences first, in length-sorted decode groups, then chunks."""
        bs, step = self.config.block_size, StepInputs()
        decodes = sorted((s for s in batch if len(s.tokens) == 1), key=lambda s: s.num_computed_tokens)
        for g in range(0, len(decodes), DECODE_GROUP_SIZE):
            group = decodes[g : g + DECODE_GROUP_SIZE]
            ctx = np.array([s.num_computed_tokens + 1 for s in group])
            tables = np.zeros((len(group), -(-int(ctx.max()) // bs)), dtype=np.int64)
            for row, s in enumerate(group):
                blocks = s.block_table[: tables.shape[1]]
                tables[row, : len(blocks)] = blocks
                step.ids.append(s.tokens[0])
                if s.samples:  # not a one-token slice of a longer prompt
                    step.sample_idx.append(g + row)
                    step.sampled.append(s.index)
            step.positions.append(ctx - 1)
            step.slots.append(tables[np.arange(len(group)), (ctx - 1) // bs] * bs + (ctx - 1) % bs)
            mask = torch.from_numpy(np.arange(tables.shape[1] * bs)[None, :] < ctx[:, None])
            step.meta.decode_groups.append(
                DecodeGroup(g, g + len(group), self._tensor(tables), mask.to(self.device))
            )
        for s in (s for s in batch if len(s.tokens) > 1):
            c, n, start = s.num_computed_tokens, len(s.tokens), len(step.ids)
            table = np.asarray(s.block_table, dtype=np.int64)
            p = np.arange(c, c + n)
            step.ids.extend(s.tokens)
            step.positions.append(p)
            step.slots.append(table[p // bs] * bs + p % bs)
            step.meta.prefills.append(PrefillChunk(start, start + n, c, self._tensor(table)))
            if s.samples:
                step.sample_idx.append(start + n - 1)
                step.sampled.append(s.index)
        step.meta.slot_mapping = self._tensor(np.concatenate(step.slots))
        return step

    def _tensor(self, a: np.ndarray | list[int]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)


def follow(config: EngineConfig, rank: int, port: int, pipe: Connection) -> None:
    """A tensor-parallel rank other than 0: run every batch rank 0 sends until it sends None or goes away."""
    parallel.watch_parent()
    pipe.send("started")
    runner = ModelRunner(config, rank, port)
    pipe.send("ready")
    try:
        while (batch := pipe.recv()) is not None:
            runner._forward(runner._prepare(batch))
    except EOFError:
        pass
    finally:
        runner.close()
