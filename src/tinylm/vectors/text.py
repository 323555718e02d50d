"""Corpus text into sentences of words, the units word vectors are learnt for.

A sentence is one non-blank line of a document: plain text has no reliable sentence boundary, lines are
what word2vec's own readers (and gensim's `LineSentence`) take, and a context window never spans two lines.
Words are lowercased; `word` splits on anything that is not a letter, digit or inner apostrophe (English and
other space-separated languages), `char` takes every letter or digit alone (Chinese characters), and `jieba`
segments Chinese into words with the jieba dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

Unit = Literal["word", "char", "jieba"]
"""How a line is cut into words."""

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_CHAR = re.compile(r"[^\W_]")


def _jieba() -> Callable[[str], list[str]]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces loading its dictionary on stderr
    return lambda line: [w for w in jieba.lcut(line) if _WORD.search(w)]


def splitter(unit: Unit) -> Callable[[str], list[str]]:
    """The function that cuts one lowercased line into words for `unit`."""
    if unit == "word":
        return _WORD.findall
    if unit == "char":
        return _CHAR.findall
    return _jieba()


def sentences(documents: Iterable[str], unit: Unit = "word") -> Iterator[list[str]]:
    """The non-empty sentences (lists of words) of `documents`, one per line."""
    split = splitter(unit)
    for doc in documents:
        for line in doc.lower().split("\n"):
            words = split(line)
            if words:
                yield words
