"""What an n-gram counts: characters, words or a tinylm tokenizer's tokens, and what a sentence is.

- char: a document is one sentence of its characters, newlines included, so the model predicts every
  byte of the text (and `</s>` once per document): its bits per byte are those of a lossless code.
- token: a document is one sentence of its BPE tokens, `</s>` standing where the shards have EOS; the
  same token stream a neural model of that tokenizer is scored on.
- word: each non-blank line is one sentence of words and punctuation marks (`\\w+` or one other non-space
  character). Spaces and blank lines are not predicted, so word-level bits per byte flatter the model a
  little; compare them with each other, not with char, token or neural ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Literal

from ..errors import TinyLMError
from ..tokenizer import Tokenizer

Unit = Literal["char", "word", "token"]
UNITS = ("char", "word", "token")
_WORD = re.compile(r"\w+|[^\w\s]")


def check_unit(unit: str, has_tokenizer: bool) -> None:
    if unit not in UNITS:
        raise TinyLMError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "token" and not has_tokenizer:
        raise TinyLMError("unit 'token' needs a tokenizer: pass --tokenizer DIR (or --shards DIR)")


def token_vocab(tokenizer: Tokenizer) -> list[str]:
    """Every token string of the tokenizer by id; the n-gram vocabulary is the specials then these."""
    return [tokenizer.id_to_token(i) or f"<id {i}>" for i in range(tokenizer.vocab_size)]


def sentences(document: str, unit: str, tokenizer: Tokenizer | None = None) -> Iterator[Sequence[str]]:
    """The sentences of one document as sequences of tokens of `unit` (of characters: the document itself,
    a `str`, which training codes by code points without a Python object per character)."""
    if unit == "char":
        yield document
    elif unit == "word":
        for line in document.splitlines():
            words = _WORD.findall(line)
            if words:
                yield words
    else:
        yield [tokenizer.id_to_token(i) for i in tokenizer.encode(document, special=False)]


def join(tokens: list[str], unit: str, tokenizer: Tokenizer | None = None) -> str:
    """Text from generated tokens: characters concatenated, words spaced, tokens decoded."""
    if unit == "char":
        return "".join(tokens)
    if unit == "word":
        return " ".join(tokens)
    return tokenizer.decode([tokenizer.token_to_id(t) for t in tokens])
