"""CUDA graphs for decode-only steps: the whole forward pass replayed with one launch.

A decode step of a small model is dominated by launching hundreds of small kernels. Graphs are captured
once per batch-size bucket over static input buffers; a step pads its batch up to the next bucket, copies
its inputs into the buffers and replays. Padding rows are dummy one-token sequences whose K/V go to a
sink block that no sequence owns, so they never disturb real ones. The bucketing and padding are plain
functions; with capture=False the same buffers run eagerly, which lets the padding be checked on a CPU.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from goodput.worker_image.model import AttnMetadata, CausalLM, DecodeGroup
from goodput.worker_image.transfer import copy_into

MAX_GRAPH_BATCH = 512  # larger decode batches are compute bound and run eagerly


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """Buckets to capture: 1, 2, 4, 8, then every multiple of 16, ending exactly at the largest batch."""
    cap = min(max_num_seqs, MAX_GRAPH_BATCH)
    return sorted({s for s in (1, 2, 4, 8) if s < cap} | set(range(16, cap, 16)) | {cap})


def padded_size(n: int, sizes: list[int]) -> int | None:
    """The smallest bucket holding n decodes; None when there are too many (the step runs eagerly)."""
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


@dataclass
class DecodeBatch:
    ids: np.ndarray  # [size] int64
    positions: np.ndarray  # [size]
    slots: np.ndarray  # [size]
    context_lens: np.ndarray  # [size]
    block_tables: np.ndarray  # [size, width]


def pad_decode_batch(
    ids: np.ndarray,
    positions: np.ndarray,
    slots: np.ndarray,
    block_tables: np.ndarray,
    size: int,
    width: int,
    sink_block: int,
    block_size: int,
) -> DecodeBatch:
    """Real rows first, then dummies: token 0 at position 0 with a context of one token in the sink block.
    Unused table entries point at the sink too, so every entry is a valid block id."""
    n = len(ids)
    tables = np.full((size, width), sink_block, dtype=np.int64)
    tables[:n, : block_tables.shape[1]] = block_tables
    pad = size - n

    def padded(real: np.ndarray, dummy: int) -> np.ndarray:
        return np.concatenate([np.asarray(real, dtype=np.int64), np.full(pad, dummy, dtype=np.int64)])

    return DecodeBatch(
        ids=padded(ids, 0),
        positions=padded(positions, 0),
        slots=padded(slots, sink_block * block_size),
        context_lens=padded(np.asarray(positions) + 1, 1),
        block_tables=tables,
    )


class DecodeGraphs:
    """One graph per bucket, sharing static inputs, an output buffer and a memory pool."""

    def __init__(
        self,
        model: CausalLM,
        max_num_seqs: int,
        max_model_len: int,
        block_size: int,
        sink_block: int,
        device: torch.device,
        capture: bool,
    ) -> None:
        self.model, self.block_size, self.sink_block = model, block_size, sink_block
        self.sizes = graph_batch_sizes(max_num_seqs)
        self.width = -(-max_model_len // block_size)
        big = self.sizes[-1]
        none = np.zeros(0, dtype=np.int64)
        empty = pad_decode_batch(
            none, none, none, none.reshape(0, 0), big, self.width, sink_block, block_size
        )
        self.buffers = DecodeBatch(**{k: torch.from_numpy(v).to(device) for k, v in vars(empty).items()})
        dtype = model.model.embed_tokens.weight.dtype
        self.hidden = torch.zeros(big, model.config.hidden_size, dtype=dtype, device=device)
        self.runs: dict[int, Callable[[], object]] = {}
        pool = None
        for size in reversed(self.sizes):  # largest first: the smaller graphs reuse its memory pool
            self._forward(size)  # compiles kernels and settles allocations outside any capture
            if not capture:
                self.runs[size] = lambda size=size: self._forward(size)
                continue
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._forward(size)
            pool = graph.pool() if pool is None else pool
            self.runs[size] = graph.replay
        if capture:
            torch.cuda.synchronize(device)

    @torch.inference_mode()
    def _forward(self, size: int) -> None:
        b = self.buffers
        group = DecodeGroup(0, size, b.block_tables[:size], b.context_lens[:size])
        meta = AttnMetadata(slot_mapping=b.slots[:size], decode_groups=[group])
        self.hidden[:size] = self.model(b.ids[:size], b.positions[:size], meta)

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    def run(
        self, ids: np.ndarray, positions: np.ndarray, slots: np.ndarray, tables: np.ndarray
    ) -> torch.Tensor:
        """Hidden states of the n real decodes; valid until the next run."""
        n = len(ids)
        size = padded_size(n, self.sizes)
        assert size is not None, f"{n} decodes exceed the largest captured batch {self.max_batch}"
        batch = pad_decode_batch(
            ids, positions, slots, tables, size, self.width, self.sink_block, self.block_size
        )
        for name, host in vars(batch).items():
            copy_into(getattr(self.buffers, name), host)
        self.runs[size]()
        return self.hidden[:n]
