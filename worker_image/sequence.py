"""One request's mutable state as it moves through waiting -> running -> finished."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from goodput.worker_image.grammar import Matcher
from goodput.worker_image.sampling import Priority, SamplingParams


class SeqStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(eq=False)
class Sequence:
    request_id: str
    token_ids: list[int]
    params: SamplingParams
    priority: Priority
    arrival_time: float
    num_prompt_tokens: int = 0
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)
    num_cached_tokens: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    matcher: Matcher | None = None  # where the output is in params.grammar, if it has one
    output_text: str = ""
    num_emitted_chars: int = 0
    prefix_offset: int = 0
    read_offset: int = 0

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)
        self.read_offset = self.num_prompt_tokens
        self.prefix_offset = max(0, self.num_prompt_tokens - 5)  # context for incremental detokenization

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def sort_key(self) -> tuple[int, float]:
        """Interactive before batch, then first come first served."""
        return (int(self.priority), self.arrival_time)
