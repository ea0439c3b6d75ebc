"""Sampling: filters, per-request seeds, stop tokens and stop strings, incremental text."""

from __future__ import annotations

import pytest
import torch

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine, RequestOutput
from goodput.worker_image.sampler import Sampler
from goodput.worker_image.sampling import Priority, SamplingParams
from goodput.worker_image.sequence import Sequence


def seqs(n: int, **params: object) -> list[Sequence]:
    return [Sequence(str(i), [1], SamplingParams(**params), Priority.INTERACTIVE, 0.0) for i in range(n)]


def test_top_k_keeps_only_the_k_best() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0)).repeat(400, 1)
    out = Sampler("cpu", 0)(logits, seqs(400, temperature=2.0, top_k=3))
    assert set(out.token_ids) == set(logits[0].topk(3).indices.tolist())


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = probs.log().repeat(400, 1)
    out = Sampler("cpu", 0)(logits, seqs(400, top_p=0.7))
    assert set(out.token_ids) == {0, 1}


def test_greedy_and_mixed_batches() -> None:
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(1))
    batch = seqs(2, temperature=0.0) + seqs(2, temperature=1.0, top_k=1)
    assert Sampler("cpu", 0)(logits, batch).token_ids == logits.argmax(-1).tolist()


def test_seeded_sampling_is_independent_of_the_batch() -> None:
    logits = torch.zeros(3, 1000)

    def sample(batch: list[Sequence]) -> list[int]:
        for s in batch:
            if s.params.seed is not None:
                s.generator = torch.Generator().manual_seed(s.params.seed)
        return Sampler("cpu", 99)(logits[: len(batch)], batch).token_ids

    alone = sample(seqs(1, seed=5))
    crowded = sample(seqs(1) + seqs(1, seed=5) + seqs(1, seed=6))
    assert crowded[1] == alone[0] and crowded[2] != alone[0]


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return LLMEngine(EngineConfig(model="random:tiny", max_model_len=128, num_kv_blocks=64))


def collect(
    engine: LLMEngine, params: SamplingParams, prompt: list[int] | None = None
) -> list[RequestOutput]:
    engine.add_request("r", prompt or [72, 105, 33], params)
    outs: list[RequestOutput] = []
    while engine.has_unfinished_requests():
        outs.extend(engine.step())
    return outs


def test_seeded_requests_repeat(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0, seed=3, ignore_eos=True)
    first = [t for o in collect(engine, params) for t in o.new_token_ids]
    second = [t for o in collect(engine, params) for t in o.new_token_ids]
    assert first == second


def test_stop_strings_cut_text_and_are_never_streamed(engine: LLMEngine) -> None:
    greedy = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    full = "".join(o.new_text for o in collect(engine, greedy))
    stop = full[20:23]
    outs = collect(
        engine, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=[stop, "\x00\x01"])
    )
    text = "".join(o.new_text for o in outs)
    assert text == full[: full.index(stop)]
    assert outs[-1].finished and outs[-1].finish_reason == "stop"
    assert all(stop not in o.new_text for o in outs)


def test_stop_token_ids_and_max_tokens(engine: LLMEngine) -> None:
    greedy = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    outs = collect(engine, greedy)
    tokens = [t for o in outs for t in o.new_token_ids]
    assert len(tokens) == 10 and outs[-1].finish_reason == "length" and outs[-1].num_output_tokens == 10
    stop_id = tokens[4]
    outs = collect(engine, SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=[stop_id]))
    got = [t for o in outs for t in o.new_token_ids]
    assert got == tokens[: tokens.index(stop_id) + 1] and outs[-1].finish_reason == "stop"


def test_abort(engine: LLMEngine) -> None:
    engine.add_request("x", [1, 2, 3], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.abort_request("x")
    outs = engine.step()
    assert [(o.request_id, o.finished, o.finish_reason) for o in outs] == [("x", True, "abort")]
    assert not engine.has_unfinished_requests()
    assert engine.stats().num_free_blocks == engine.stats().num_total_blocks


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("temperature", -1.0),
        ("top_k", -2),
        ("top_p", 0.0),
        ("stop", [""]),
        ("logprobs", 99),
    ],
)
def test_invalid_sampling_params_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})
