"""Per-sequence logits processing in the sampling step: penalties, logit bias and the grammar's mask."""

from __future__ import annotations

import json

import pytest
import torch

from goodput.worker_image import logits_processors
from goodput.worker_image.grammar import Grammars, json_schema_grammar
from goodput.worker_image.sampling import InvalidParameterError, Priority, SamplingParams
from goodput.worker_image.sequence import Sequence
from goodput.worker_image.tokenizer import ByteTokenizer

VOCAB = 512


def seq(output: list[int], **params: object) -> Sequence:
    s = Sequence("r", [1, 2], SamplingParams(**params), Priority.INTERACTIVE, 0.0)
    s.token_ids.extend(output)
    return s


def test_penalties_follow_openai_definitions() -> None:
    logits = torch.zeros(2, VOCAB)
    out = logits_processors.process(
        logits, [seq([7, 7, 9], frequency_penalty=0.5), seq([7, 7, 9], presence_penalty=0.25)]
    )
    assert out[0, 7] == -1.0 and out[0, 9] == -0.5 and out[0, 8] == 0.0  # 0.5 per occurrence
    assert out[1, 7] == -0.25 and out[1, 9] == -0.25 and out[1, 8] == 0.0  # once per token present
    assert logits.abs().sum() == 0  # the model's logits (and so its logprobs) are untouched


def test_logit_bias_adds_to_the_named_tokens() -> None:
    out = logits_processors.process(torch.zeros(1, VOCAB), [seq([], logit_bias={3: 100.0, 4: -2.5})])
    assert out[0, 3] == 100.0 and out[0, 4] == -2.5 and out[0, 5] == 0.0


@pytest.mark.parametrize(("name", "value"), [("presence_penalty", 2.5), ("frequency_penalty", -3.0)])
def test_penalties_out_of_range_name_the_parameter(name: str, value: float) -> None:
    with pytest.raises(InvalidParameterError) as raised:
        SamplingParams(**{name: value})
    assert raised.value.param == name


def test_the_grammar_masks_all_but_its_next_tokens() -> None:
    grammars = Grammars(ByteTokenizer("m"), VOCAB)
    s = seq([])
    s.matcher = grammars.matcher(json_schema_grammar({"enum": ["yes"]}))
    text = ""
    for _ in range(10):
        out = logits_processors.process(torch.zeros(1, VOCAB), [s])
        allowed = torch.isfinite(out[0]).nonzero().flatten().tolist()
        assert len(allowed) == 1  # one string only: each step has one legal token
        text += ByteTokenizer("m").decode(allowed)
        if s.matcher.advance(allowed[0]):
            break
    assert json.loads(text) == "yes"
