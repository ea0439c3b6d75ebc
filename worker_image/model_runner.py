"""Owns the model, the KV block pool and the sampler; turns a scheduled batch into one forward pass."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

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


class ModelRunner:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.cpu_threads or min(torch.get_num_threads(), cpu_quota()))
        self.model, self.tokenizer, self.model_config = load_model(
            config.model, config.dtype, config.device, config.max_model_len, config.seed
        )
        mc, bs = self.model_config, config.block_size
        bytes_per_block = (
            2 * mc.num_layers * mc.num_kv_heads * bs * mc.head_dim * DTYPES[config.dtype].itemsize
        )
        self.num_blocks = config.num_kv_blocks or config.kv_cache_memory_mb * 2**20 // bytes_per_block
        if self.num_blocks * bs < config.max_model_len:
            raise ValueError(
                f"invalid engine config: num_kv_blocks={self.num_blocks} (kv_cache_memory_mb="
                f"{config.kv_cache_memory_mb}) holds {self.num_blocks * bs} tokens, fewer than "
                f"max_model_len={config.max_model_len}"
            )
        shape = (2, mc.num_layers, mc.num_kv_heads, self.num_blocks, bs, mc.head_dim)
        self.kv_cache = torch.zeros(shape, dtype=DTYPES[config.dtype], device=self.device)
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
        self.sampler = Sampler(config.device, config.seed)

    @torch.inference_mode()
    def run(self, scheduled: list[tuple[Sequence, int]]) -> tuple[list[Sequence], SamplerOutput | None]:
        """One forward pass; returns the sequences that reached their end (and so sample) and their tokens."""
        decodes = sorted((s for s, n in scheduled if n == 1), key=lambda s: s.num_computed_tokens)
        prefills = [(s, n) for s, n in scheduled if n > 1]
        bs = self.config.block_size
        ids: list[int] = []
        pos: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        meta = AttnMetadata(slot_mapping=torch.empty(0))
        sample_idx: list[int] = []
        sampling: list[Sequence] = []
        for g in range(0, len(decodes), DECODE_GROUP_SIZE):
            group = decodes[g : g + DECODE_GROUP_SIZE]
            ctx = np.array([s.num_computed_tokens + 1 for s in group])
            width = -(-int(ctx.max()) // bs)
            tables = np.zeros((len(group), width), dtype=np.int64)
            for row, s in enumerate(group):
                tables[row, : len(s.block_table)] = s.block_table[:width]
                ids.append(s.token_ids[s.num_computed_tokens])
            p = ctx - 1
            pos.append(p)
            slots.append(tables[np.arange(len(group)), p // bs] * bs + p % bs)
            mask = np.arange(width * bs)[None, :] < ctx[:, None]
            meta.decode_groups.append(
                DecodeGroup(g, g + len(group), self._tensor(tables), torch.from_numpy(mask).to(self.device))
            )
            for row, s in enumerate(group):
                if s.num_computed_tokens + 1 == len(s):  # not a one-token slice of a longer prompt
                    sample_idx.append(g + row)
                    sampling.append(s)
        start = len(ids)
        for s, n in prefills:
            c = s.num_computed_tokens
            table = np.asarray(s.block_table, dtype=np.int64)
            p = np.arange(c, c + n)
            ids.extend(s.token_ids[c : c + n])
            pos.append(p)
            slots.append(table[p // bs] * bs + p % bs)
            meta.prefills.append(PrefillChunk(start, start + n, c, self._tensor(table)))
            start += n
            if c + n == len(s):
                sample_idx.append(start - 1)
                sampling.append(s)
        meta.slot_mapping = self._tensor(np.concatenate(slots))
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        hidden = self.model(input_ids, self._tensor(np.concatenate(pos)), meta)
        if not sampling:
            return [], None
        logits = self.model.logits(hidden[self._tensor(np.array(sample_idx))])
        return sampling, self.sampler(logits, sampling)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64, copy=False)).to(self.device)
