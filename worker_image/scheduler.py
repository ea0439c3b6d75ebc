"""Iteration-level scheduling: which sequences run in the next forward pass, and how many tokens each.

Every step spends a token budget. Running sequences go first (a decode costs one token, an unfinished
prompt takes the next chunk), then waiting sequences are admitted with whatever budget is left, so long
prompts are prefilled in chunks that share steps with decodes. Interactive requests are served before
batch ones; when KV blocks run out the newest batch sequence is preempted first and later recomputed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from goodput.worker_image.block_manager import BlockManager
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.sampling import Priority
from goodput.worker_image.sequence import SeqStatus, Sequence


@dataclass
class SchedulerOutput:
    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, new tokens)
    defer_until: float | None = None  # the batch window holds admissions until this monotonic time


class Scheduler:
    def __init__(self, config: EngineConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.bm = block_manager
        self.waiting: dict[Priority, deque[Sequence]] = {p: deque() for p in Priority}
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def num_waiting(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def add(self, seq: Sequence) -> None:
        self.waiting[seq.priority].append(seq)

    def remove(self, seq: Sequence) -> None:
        """Forget a finished or aborted sequence and release its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting[seq.priority]:
            self.waiting[seq.priority].remove(seq)
        self.bm.free(seq)
        seq.status = SeqStatus.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.bm.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        self.waiting[seq.priority].appendleft(seq)
        self.num_preemptions += 1

    def _first_chunk(self, seq: Sequence, budget: int) -> tuple[list[int], list[bytes], int, int]:
        """Cached prefix blocks, their hashes, new tokens to compute and fresh blocks needed."""
        cached, hashes = self.bm.match_prefix(seq)
        start = len(cached) * self.bm.block_size
        n = min(len(seq) - start, budget)
        return cached, hashes, n, -(-(start + n) // self.bm.block_size) - len(cached)

    def _make_room_for_interactive(self) -> None:
        """Preempt running batch sequences until the first waiting interactive request fits."""
        queue = self.waiting[Priority.INTERACTIVE]
        if not queue:
            return
        cached, _, _, need = self._first_chunk(queue[0], self.config.max_num_batched_tokens)
        while not (self.bm.can_allocate(need, cached) and len(self.running) < self.config.max_num_seqs):
            victims = [s for s in self.running if s.priority is Priority.BATCH]
            if not victims:
                return
            self._preempt(max(victims, key=lambda s: s.arrival_time))

    def schedule(self, now: float | None = None) -> SchedulerOutput:
        now = time.monotonic() if now is None else now
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        self._make_room_for_interactive()
        self.running.sort(key=lambda s: s.sort_key)
        queue = list(self.running)
        while queue and budget > 0:
            seq = queue.pop(0)
            n = min(len(seq) - seq.num_computed_tokens, budget)
            need = self.bm.blocks_needed(seq, seq.num_computed_tokens + n)
            while not self.bm.can_allocate(need) and queue:
                self._preempt(queue.pop())  # lowest priority, newest arrival
            if not self.bm.can_allocate(need):
                self._preempt(seq)
                break
            self.bm.grow(seq, seq.num_computed_tokens + n)
            out.scheduled.append((seq, n))
            budget -= n
        if self.num_waiting and self._window_open(now, out):
            return out
        for priority in Priority:
            waiting = self.waiting[priority]
            while waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
                seq = waiting[0]
                cached, hashes, n, need = self._first_chunk(seq, budget)
                if not self.bm.can_allocate(need, cached):
                    return out  # keep arrival order: nobody overtakes the head of the queue
                waiting.popleft()
                self.bm.allocate_prefix(seq, cached, hashes)
                self.bm.grow(seq, seq.num_computed_tokens + n)
                seq.status = SeqStatus.RUNNING
                if seq.first_scheduled_time is None:
                    seq.first_scheduled_time = now
                    seq.num_cached_tokens = seq.num_computed_tokens
                self.running.append(seq)
                out.scheduled.append((seq, n))
                budget -= n
        return out

    def _window_open(self, now: float, out: SchedulerOutput) -> bool:
        """Hold admissions up to batch_window_ms after the oldest arrival while the batch is below target."""
        window = self.config.batch_window_ms / 1000.0
        if window <= 0 or len(self.running) + self.num_waiting >= self.config.max_num_seqs:
            return False
        oldest = min(q[0].arrival_time for q in self.waiting.values() if q)
        if now >= oldest + window:
            return False
        out.defer_until = oldest + window
        return True
