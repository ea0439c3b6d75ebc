"""Owns the model, the KV block pool and the sampler; turns a scheduled batch into one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np
import torch

from goodput.worker_image import attention, cpu, parallel, tp_ranks
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.cuda_graphs import DecodeGraphs
from goodput.worker_image.loader import load_model, torch_dtype
from goodput.worker_image.model import AttnMetadata, DecodeGroup, PrefillChunk
from goodput.worker_image.sampler import Sampler, SamplerOutput
from goodput.worker_image.sequence import Sequence
from goodput.worker_image.transfer import to_device

DECODE_GROUP_SIZE = 16  # reference decodes sorted by length and gathered in groups, so padding stays small


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
class DecodeRows:
    """Decode tokens [start, start + len(context_lens)) of the flat batch, attended in one backend call."""

    start: int
    block_tables: np.ndarray  # [B, max_blocks]
    context_lens: np.ndarray  # [B]


@dataclass
class PrefillRows:
    start: int
    end: int
    context: int
    block_table: np.ndarray


@dataclass
class StepPlan:
    """One step's inputs on the host; uploaded in one place so the host never waits for the GPU."""

    ids: list[int] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    slots: list[np.ndarray] = field(default_factory=list)
    decodes: list[DecodeRows] = field(default_factory=list)
    prefills: list[PrefillRows] = field(default_factory=list)
    sample_idx: list[int] = field(default_factory=list)  # rows of the flat batch whose logits are sampled
    sampled: list[int] = field(default_factory=list)  # scheduled-batch index of each sampled row
    graph: bool = False  # decode only and small enough for a captured CUDA graph


def kv_cache_blocks(total: int, free: int, activations: int, utilization: float, bytes_per_block: int) -> int:
    """KV blocks that fit in `utilization` of the device's memory after what is in use now (weights, the
    CUDA context, other processes) and the activation peak of the largest step."""
    budget = total * utilization - (total - free) - activations
    return max(0, int(budget // bytes_per_block))


def warm_up_batch(config: EngineConfig) -> list[ScheduledSeq]:
    """The largest step the scheduler can produce: the whole token budget in as many prompts as there
    may be sequences, every one sampled (so the logits peak too), each in its own blocks."""
    seqs = min(config.max_num_seqs, config.max_num_batched_tokens)
    length = min(config.max_num_batched_tokens // seqs, config.max_model_len)
    per_seq = -(-length // config.block_size)
    return [
        ScheduledSeq(i, [0] * length, 0, list(range(i * per_seq, (i + 1) * per_seq)), True)
        for i in range(seqs)
    ]


class ModelRunner:
    """Rank 0 (the engine's) runs scheduled batches; with tensor parallelism it also spawns and drives the
    other ranks, each a ModelRunner in `follow`."""

    def __init__(self, config: EngineConfig, rank: int = 0, port: int = 0) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.backend = attention.resolve_backend(config.attention_backend, config.device)
        self.followers: tp_ranks.Followers | None = None
        self.graphs: DecodeGraphs | None = None
        if self.device.type == "cpu":
            threads = config.cpu_threads or cpu.default_threads(torch.get_num_threads())
            torch.set_num_threads(threads)
            cpu.warn_if_oversubscribed(threads)
        elif config.tensor_parallel_size == 1:  # "cuda" means the current GPU; name it, and make it current
            index = self.device.index
            self.device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
            torch.cuda.set_device(self.device)
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
                self.followers = tp_ranks.Followers(follow, config, port)
                self.followers.wait("started")  # their imports do not count against the rendezvous timeout
            self.device = parallel.init_group(rank, tp, port, config.device, config.distributed_timeout_s)
        self.model, self.tokenizer, self.model_config = load_model(
            config.model, config.dtype, str(self.device), config.max_model_len, config.seed
        )
        decode = attention.decode_fn(self.backend)
        for layer in self.model.model.layers:
            layer.self_attn.decode = decode
        self.num_blocks = self._count_blocks()
        self._allocate_kv(self.num_blocks + 1)  # the last block is the sink of CUDA graphs' padding rows
        if self.device.type == "cuda" and not config.enforce_eager:
            self.graphs = DecodeGraphs(
                self.model,
                config.max_num_seqs,
                config.max_model_len,
                config.block_size,
                self.num_blocks,
                self.device,
                capture=True,
            )
        if self.followers is not None:
            self.followers.wait("ready")  # however long they take to load, the first step will not time out
        self.sampler = Sampler(str(self.device), config.seed)

    def _allocate_kv(self, num_blocks: int) -> None:
        mc, tp = self.model_config, self.config.tensor_parallel_size
        shape = (2, mc.num_layers, mc.num_kv_heads // tp, num_blocks, self.config.block_size, mc.head_dim)
        self.kv_cache = torch.zeros(shape, dtype=torch_dtype(self.config.dtype), device=self.device)
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]

    def _count_blocks(self) -> int:
        """The configured count; else, on a GPU, what free memory holds after a warm-up forward pass (the
        same on every rank: their minimum); else kv_cache_memory_mb's worth."""
        config, mc, bs = self.config, self.model_config, self.config.block_size
        kv_heads = mc.num_kv_heads // config.tensor_parallel_size
        bytes_per_block = 2 * mc.num_layers * kv_heads * bs * mc.head_dim * torch_dtype(config.dtype).itemsize
        if config.num_kv_blocks:
            n, source = config.num_kv_blocks, "num_kv_blocks"
        elif self.device.type == "cuda":
            activations = self._warm_up()
            free, total = torch.cuda.mem_get_info(self.device)
            n = kv_cache_blocks(total, free, activations, config.gpu_memory_utilization, bytes_per_block)
            n = parallel.min_over_ranks(max(0, n - 1), self.device)  # one block is the graphs' sink
            source = f"gpu_memory_utilization={config.gpu_memory_utilization}"
        else:
            n = config.kv_cache_memory_mb * 2**20 // bytes_per_block
            source = f"kv_cache_memory_mb={config.kv_cache_memory_mb}"
        if n * bs < config.max_model_len:
            raise ValueError(
                f"invalid engine config: num_kv_blocks={n} ({source}) holds {n * bs} tokens, "
                f"fewer than max_model_len={config.max_model_len}"
            )
        return n

    def _warm_up(self) -> int:
        """Bytes of activations and logits at the peak of warm_up_batch, run on a scratch cache, so the KV
        pool can take the rest."""
        batch = warm_up_batch(self.config)
        self._allocate_kv(1 + max(b for s in batch for b in s.block_table))
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self._forward(self._prepare(batch))
        torch.cuda.synchronize(self.device)
        activations = torch.cuda.max_memory_allocated(self.device) - before
        self._allocate_kv(0)
        torch.cuda.empty_cache()
        return activations

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
    def _forward(self, step: StepPlan) -> torch.Tensor | None:
        """Logits of the sampled rows (on rank 0; None elsewhere or when no row samples). Only uploads:
        nothing here waits for the device."""
        sample_idx = self._tensor(step.sample_idx) if step.sample_idx else None
        if step.graph and self.graphs is not None:
            (d,) = step.decodes
            hidden = self.graphs.run(np.asarray(step.ids), step.positions[0], step.slots[0], d.block_tables)
        else:
            meta = AttnMetadata(
                slot_mapping=self._tensor(np.concatenate(step.slots)),
                decode_groups=[
                    DecodeGroup(
                        d.start,
                        d.start + len(d.context_lens),
                        self._tensor(d.block_tables),
                        self._tensor(d.context_lens),
                    )
                    for d in step.decodes
                ],
                prefills=[
                    PrefillChunk(p.start, p.end, p.context, self._tensor(p.block_table))
                    for p in step.prefills
                ],
            )
            hidden = self.model(self._tensor(step.ids), self._tensor(np.concatenate(step.positions)), meta)
        if sample_idx is None:
            return None
        return self.model.logits(hidden[sample_idx])

    def close(self) -> None:
        """Stop the other tensor-parallel ranks and leave the process group; safe to call twice."""
        if self.followers is not None:
            self.followers.stop()
            self.followers = None
        if self.config.tensor_parallel_size > 1:
            parallel.destroy_group()

    def _prepare(self, batch: list[ScheduledSeq]) -> StepPlan:
        """Flatten the batch: single-token sequences first, in length-sorted decode groups, then chunks.
        The reference backend gathers each group's blocks, so its groups are small to limit padding; the
        Triton kernel and CUDA graphs take all decodes in one group."""
        bs, step = self.config.block_size, StepPlan()
        decodes = sorted((s for s in batch if len(s.tokens) == 1), key=lambda s: s.num_computed_tokens)
        step.graph = (
            self.graphs is not None and len(decodes) == len(batch) and len(decodes) <= self.graphs.max_batch
        )
        one_group = step.graph or self.backend != "reference"
        group_size = max(1, len(decodes)) if one_group else DECODE_GROUP_SIZE
        for g in range(0, len(decodes), group_size):
            group = decodes[g : g + group_size]
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
            step.decodes.append(DecodeRows(g, tables, ctx))
        for s in (s for s in batch if len(s.tokens) > 1):
            c, n, start = s.num_computed_tokens, len(s.tokens), len(step.ids)
            table = np.asarray(s.block_table, dtype=np.int64)
            p = np.arange(c, c + n)
            step.ids.extend(s.tokens)
            step.positions.append(p)
            step.slots.append(table[p // bs] * bs + p % bs)
            step.prefills.append(PrefillRows(start, start + n, c, table))
            if s.samples:
                step.sample_idx.append(start + n - 1)
                step.sampled.append(s.index)
        return step

    def _tensor(self, a: np.ndarray | list[int]) -> torch.Tensor:
        return to_device(np.asarray(a, dtype=np.int64), self.device)


def follow(config: EngineConfig, rank: int, port: int, pipe: Connection) -> None:
    """A tensor-parallel rank other than 0: run every batch rank 0 sends until it sends None or goes away."""
    tp_ranks.watch_parent()
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
