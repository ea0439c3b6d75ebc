"""A Hugging Face folder's tokenizer.json and chat template, and incremental detokenization."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.sampling import SamplingParams

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
)


def test_folder_tokenizer_and_streamed_text(tmp_path: Path, hf_tiny_model) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(
        ["hello world, the quick brown fox jumps over the lazy dog ünïcode"] * 20, trainer
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    hf_tiny_model("llama", vocab_size=320, eos_token_id=tok.token_to_id("</s>")).save_pretrained(tmp_path)

    engine = LLMEngine(EngineConfig(model=str(tmp_path), max_model_len=128, num_kv_blocks=32))
    t = engine.tokenizer
    assert t.decode(t.encode("the lazy dog ünïcode")) == "the lazy dog ünïcode"
    assert t.eos_token_id == tok.token_to_id("</s>") and t.model_name == tmp_path.name
    assert t.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>[user] hi\n[assistant]"

    engine.add_request("r", t.encode("hello world"), SamplingParams(max_tokens=30, ignore_eos=True, seed=1))
    outs = []
    while engine.has_unfinished_requests():
        outs.extend(engine.step())
    ids = [i for o in outs for i in o.new_token_ids]
    assert "".join(o.new_text for o in outs) == t.decode(ids)
