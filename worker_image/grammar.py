"""Grammar-constrained decoding with llguidance: a grammar (from a JSON schema, or JSON at all) becomes a
matcher per sequence that says which tokens may come next and advances on each token sampled.

llguidance needs each token's bytes. Hugging Face tokenizers hand it their `tokenizer.json`; the byte
tokenizer of the `random:` presets is described token by token (bytes 0-255, three specials, and one
printable ASCII character for every id above them, as `ByteTokenizer.decode` does).
"""

from __future__ import annotations

import functools
from typing import Any

import llguidance
import torch

from goodput.worker_image.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer

# Compact JSON: flexible whitespace lets a weak model emit blanks until max_tokens, never closing a value.
_JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


class GrammarError(ValueError):
    """A schema or grammar that llguidance cannot compile; the message says why."""


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar of JSON texts valid under `schema`."""
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)  # type: ignore[arg-type]
    except ValueError as exc:
        raise GrammarError(str(exc)) from None


class _ByteTokens:
    """The byte tokenizer as llguidance's TokenizerWrapper expects it."""

    def __init__(self, vocab_size: int) -> None:
        bt = ByteTokenizer
        self.eos_token_id = bt.EOS
        self.bos_token_id = bt.BOS
        self.special_token_ids = [bt.BOS, bt.EOS, bt.PAD]
        names = {bt.BOS: b"<bos>", bt.EOS: b"<eos>", bt.PAD: b"<pad>"}
        self.tokens = [
            bytes([t]) if t < 256 else b"\xff" + names[t] if t <= bt.PAD else bytes([33 + t % 94])
            for t in range(vocab_size)
        ]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)


def _ll_tokenizer(tokenizer: Tokenizer, vocab_size: int) -> llguidance.LLTokenizer:
    if isinstance(tokenizer, ByteTokenizer):
        return llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(_ByteTokens(vocab_size)), n_vocab=vocab_size
        )
    if isinstance(tokenizer, HFTokenizer):
        return llguidance.LLTokenizer(
            tokenizer.to_json(), n_vocab=vocab_size, eos_token=tokenizer.eos_token_id
        )
    raise TypeError(f"no grammar support for {type(tokenizer).__name__}")


class Grammars:
    """Compiles grammars for one tokenizer and vocabulary (the model's, which may exceed the tokenizer's)."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._ll: llguidance.LLTokenizer | None = None  # built on first use: a second or so for big vocabs

    @property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        if self._ll is None:
            self._ll = _ll_tokenizer(self._tokenizer, self.vocab_size)
        return self._ll

    def check(self, grammar: str) -> None:
        """Raise GrammarError unless the grammar compiles (remembered: clients repeat their schemas, and the
        server and the engine both check)."""
        error = self._validate(grammar)
        if error:
            raise GrammarError(error)

    @functools.lru_cache(maxsize=512)  # noqa: B019 (one Grammars per engine, living as long as it)
    def _validate(self, grammar: str) -> str:
        return llguidance.LLMatcher.validate_grammar(grammar, self.ll_tokenizer)

    def matcher(self, grammar: str) -> Matcher:
        return Matcher(llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0), self.vocab_size)


class Matcher:
    """One sequence's position in its grammar."""

    def __init__(self, ll: llguidance.LLMatcher, vocab_size: int) -> None:
        self._ll = ll
        self.vocab_size = vocab_size

    def allowed(self) -> torch.Tensor:
        """A bool mask over the vocabulary of the tokens the grammar allows next."""
        words = torch.frombuffer(bytearray(self._ll.compute_bitmask()), dtype=torch.uint8)
        bits = (words.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1  # little-endian bit order
        return bits.flatten()[: self.vocab_size].bool()

    def advance(self, token: int) -> bool:
        """Take the sampled token; True when the grammar is then complete (or broken: a token it refused)."""
        self._ll.consume_token(token)
        return self.done

    @property
    def done(self) -> bool:
        """The grammar admits nothing more (a closed JSON value), or the matcher broke."""
        return self._ll.is_stopped() or self._ll.is_error()
