"""Per-sequence changes to the logits before a token is chosen: repetition penalties, logit bias, and the
grammar's mask (structured outputs). They run in the sampling step, on the engine's one thread."""

from __future__ import annotations

import torch

from goodput.worker_image.sequence import Sequence
from goodput.worker_image.transfer import to_device


def needs_processing(seqs: list[Sequence]) -> bool:
    return any(s.params.penalized or s.params.logit_bias or s.matcher is not None for s in seqs)


def process(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """A copy of `logits` [batch, vocab] with each row's penalties, bias and grammar mask applied."""
    out = logits.clone()
    dev, vocab = out.device, out.shape[-1]
    for row, seq in enumerate(seqs):
        params = seq.params
        if params.penalized and seq.num_output_tokens:
            counts = torch.bincount(to_device(seq.output_token_ids, dev), minlength=vocab)[:vocab]
            counts = counts.to(out.dtype)
            out[row] -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(
                out.dtype
            )
        if params.logit_bias:
            ids = to_device(list(params.logit_bias), dev)
            out[row, ids] += to_device(list(params.logit_bias.values()), dev, out.dtype)
        if seq.matcher is not None:
            allowed = seq.matcher.allowed().to(dev)
            out[row, : allowed.shape[0]].masked_fill_(~allowed, float("-inf"))
            out[row, allowed.shape[0] :] = float("-inf")
    return out
