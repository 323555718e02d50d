"""Words and sentences of a document, for the quality rules and the MinHash shingles.

Languages written with spaces are split into words and punctuation marks (a close, dependency-free stand-in
for NLTK's Treebank tokenizer, which datatrove uses for English: "don't" stays one word here). Languages
written without spaces (Chinese, Japanese) have no words to split on, so each Han or kana character counts
as one word -- a character is roughly a morpheme, and a count of characters is what "document length" can
mean there.
"""

from __future__ import annotations

import re

UNSEGMENTED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{UNSEGMENTED}]|[^\W{UNSEGMENTED}]+(?:['’][^\W{UNSEGMENTED}]+)*|\.\.\.|[^\w\s]")
_UNSEGMENTED_CHAR = re.compile(rf"[{UNSEGMENTED}]")
_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = re.compile(r"(?:\.\.\.|[.!?。！？…])+[\"'”’」』)）]*(?=\s|$)|[。！？]+[”’」』）]*")


def split_words(text: str) -> list[str]:
    """Words and punctuation marks; each Han or kana character is a word of its own."""
    return _WORD.findall(text)


def is_unsegmented(text: str) -> bool:
    """True when at least half of the letters are Han or kana: text written without spaces between words."""
    letters = len(_LETTER.findall(text))
    return letters > 0 and len(_UNSEGMENTED_CHAR.findall(text)) * 2 >= letters


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: up to a terminal mark (. ! ? 。 ！ ？ …) and its closing quotes."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
        while start < len(text) and text[start].isspace():
            start += 1
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (see `sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]
