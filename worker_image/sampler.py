"""Token selection for a whole batch at once, on the model's device.

Sampling draws argmax(probs / E) with E ~ Exp(1) (the exponential race, equivalent to sampling from
probs), so a request with a seed consumes only its own generator and reproduces its output no matter
which other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from goodput.worker_image import logits_processors
from goodput.worker_image.sequence import Sequence
from goodput.worker_image.transfer import to_device


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[float | None]
    top_logprobs: list[list[tuple[int, float]] | None]


class Sampler:
    def __init__(self, device: str, seed: int) -> None:
        self.device = device
        self.generator = torch.Generator(device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        """Tokens chosen from the processed logits (penalties, bias, grammar); logprobs are the model's own."""
        params = [s.params for s in seqs]
        dev = logits.device
        chosen_from = (
            logits_processors.process(logits, seqs) if logits_processors.needs_processing(seqs) else logits
        )
        tokens = chosen_from.argmax(dim=-1)
        if not all(p.greedy for p in params):
            greedy = to_device([p.greedy for p in params], dev, torch.bool)
            tokens = torch.where(greedy, tokens, self._sample(chosen_from, seqs))
        token_list = tokens.tolist()  # the step's one wait for the device
        lps: list[float | None] = [None] * len(seqs)
        tops: list[list[tuple[int, float]] | None] = [None] * len(seqs)
        want = [i for i, p in enumerate(params) if p.logprobs is not None]
        if want:
            rows = to_device(want, dev)
            logp = torch.log_softmax(logits[rows], dim=-1)
            chosen = logp.gather(1, tokens[rows].unsqueeze(1)).squeeze(1).tolist()
            k = max(params[i].logprobs or 0 for i in want)
            top_v, top_i = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
            top_v, top_i = top_v.tolist(), top_i.tolist()
            for j, i in enumerate(want):
                n = params[i].logprobs or 0
                lps[i] = chosen[j]
                tops[i] = list(zip(top_i[j][:n], top_v[j][:n], strict=True))
        return SamplerOutput(token_list, lps, tops)

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        params = [s.params for s in seqs]
        dev, vocab = logits.device, logits.shape[-1]
        temps = to_device([p.temperature if not p.greedy else 1.0 for p in params], dev, torch.float32)
        logits = logits / temps.unsqueeze(1)
        top_k = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
        if min(top_k) < vocab:
            kth = logits.topk(max(top_k), dim=-1).values
            ks = to_device(top_k, dev).clamp(max=kth.shape[1]) - 1
            logits = logits.masked_fill(logits < kth.gather(1, ks.unsqueeze(1)), float("-inf"))
        if any(p.top_p < 1.0 for p in params):
            top_p = to_device([p.top_p for p in params], dev, torch.float32).unsqueeze(1)
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            drop = (probs.cumsum(dim=-1) - probs) > top_p  # always keeps the most likely token
            logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        unseeded = [i for i, s in enumerate(seqs) if s.generator is None]
        if unseeded:
            noise[to_device(unseeded, dev)] = torch.empty(len(unseeded), vocab, device=dev).exponential_(
                generator=self.generator
            )
        for i, s in enumerate(seqs):
            if s.generator is not None:
                noise[i].exponential_(generator=s.generator)
        return (probs / noise).argmax(dim=-1)
