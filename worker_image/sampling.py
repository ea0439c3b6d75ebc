"""Per-request sampling parameters and the two priority classes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class InvalidParameterError(ValueError):
    """A sampling parameter out of range; `param` names it, so the server can say which without parsing."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class Priority(enum.IntEnum):
    """Lower value is served first; BATCH requests are also preempted first."""

    INTERACTIVE = 0
    BATCH = 1


@dataclass
class SamplingParams:
    """temperature 0 means greedy; top_k 0 and top_p 1 switch those filters off."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0  # subtracted once from the logit of every token already in the output
    frequency_penalty: float = 0.0  # subtracted once per occurrence in the output
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    grammar: str | None = None  # an llguidance grammar the output must match (structured outputs)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidParameterError:
            return InvalidParameterError(
                name, f"invalid sampling parameter: {name}={getattr(self, name)!r}: {why}"
            )

        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.max_tokens < 1:
            raise bad("max_tokens", "must be >= 1")
        if not 0.0 <= self.temperature <= 100.0:
            raise bad("temperature", "must be in [0, 100]")
        if self.top_k < 0:
            raise bad("top_k", "must be >= 0 (0 disables it)")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1]")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise bad("stop", "must be non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be non-negative integers")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad("logprobs", "must be in [0, 20] or None")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise bad(name, "must be in [-2, 2]")
        if any(not isinstance(t, int) or t < 0 for t in self.logit_bias):
            raise bad("logit_bias", "keys must be non-negative token ids")
        if any(not -100.0 <= b <= 100.0 for b in self.logit_bias.values()):
            raise bad("logit_bias", "values must be in [-100, 100]")

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5
