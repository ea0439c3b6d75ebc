"""Tokenizers: Hugging Face `tokenizer.json` through the `tokenizers` library, or a built-in byte tokenizer
for random presets, both behind one small interface, plus incremental detokenization."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import jinja2


class Tokenizer(Protocol):
    model_name: str
    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None) -> str: ...


DEFAULT_CHAT_TEMPLATE = (
    "{% if tools %}<|tools|>\n{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{{ m['tool_calls'] | tojson if m.get('tool_calls') else '' }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _render(template: str, messages: list[dict], tools: list[dict] | None, **special: str | None) -> str:
    """Render a chat template; `tools` (OpenAI function definitions) as Hugging Face templates expect."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))
    return env.from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=True, **special
    )


class ByteTokenizer:
    """Bytes are ids 0-255, then BOS, EOS, PAD. Ids above that (random models have big vocabularies)
    decode to one printable ASCII character each, so any generated id yields text deterministically."""

    BOS, EOS, PAD = 256, 257, 258

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.eos_token_id: int | None = self.EOS
        self.bos_token_id = self.BOS

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for t in ids:
            if t < 256:
                out.append(t)
            elif t > self.PAD:
                out.append(33 + t % 94)
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        return _render(DEFAULT_CHAT_TEMPLATE, messages, tools)


class HFTokenizer:
    def __init__(self, folder: str | Path, model_name: str, eos_token_id: int | None) -> None:
        from tokenizers import Tokenizer as _Tok

        folder = Path(folder)
        self.model_name = model_name
        self._tok = _Tok.from_file(str(folder / "tokenizer.json"))
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.chat_template: str = cfg.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        self.bos_token = _token_str(cfg.get("bos_token"))
        self.eos_token = _token_str(cfg.get("eos_token"))
        eos_from_cfg = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        self.eos_token_id = eos_token_id if eos_token_id is not None else eos_from_cfg

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def to_json(self) -> str:
        """The whole tokenizer as `tokenizer.json` text (what grammar libraries read)."""
        return self._tok.to_str()

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        return _render(
            self.chat_template, messages, tools, bos_token=self.bos_token, eos_token=self.eos_token
        )


def _token_str(tok: str | dict | None) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


def detokenize_incrementally(
    tokenizer: Tokenizer, ids: list[int], prefix_offset: int, read_offset: int, final: bool = False
) -> tuple[str, int, int]:
    """New text for ids[read_offset:], decoded in the context of a few previous tokens so multi-token
    characters and leading spaces come out right; waits while the tail is an incomplete character
    unless this is the final call. Returns (delta, new_prefix_offset, new_read_offset)."""
    prefix_text = tokenizer.decode(ids[prefix_offset:read_offset])
    new_text = tokenizer.decode(ids[prefix_offset:])
    if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
        return new_text[len(prefix_text) :], read_offset, len(ids)
    return "", prefix_offset, read_offset
