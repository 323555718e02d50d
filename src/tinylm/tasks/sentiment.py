"""Sentiment as an instruction: a Chinese review -> 正面 / 负面, an English tweet -> positive / negative / neutral.

The sources are the review corpus (`{"text", "label": "pos" | "neg"}`) and the tweet corpus
(`{"sentiment", "text"}`) of shared/data; they are not embedded in the package, so `--source` names the file.
Rows are split by their text. A text that occurs more than once is kept once, and dropped altogether if its
copies disagree on the label (no honest answer exists). Replacement characters (U+FFFD, left by bytes that
were not UTF-8) are removed from tweets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ..errors import TinyLMError
from .base import Rows, Task, records

REVIEW_LABELS = {"pos": "正面", "neg": "负面"}
TWEET_LABELS = ("positive", "negative", "neutral")


def review_prompt(text: str) -> str:
    return f"判断下面这条评论的情感是正面还是负面，只回答“正面”或“负面”。\n评论：{text}"


def tweet_prompt(text: str) -> str:
    return (
        f"Is the sentiment of this tweet positive, negative or neutral? Answer with one word.\nTweet: {text}"
    )


def _unique(labelled: Iterator[tuple[str, str]]) -> list[tuple[str, str]]:
    """(text, label) pairs with each text once; texts whose copies disagree are dropped."""
    labels: dict[str, set[str]] = {}
    for text, label in labelled:
        labels.setdefault(text, set()).add(label)
    return [(text, next(iter(ls))) for text, ls in labels.items() if len(ls) == 1]


def _labelled(source: str, text_field: str, label_field: str, allowed) -> Iterator[tuple[str, str]]:
    for where, r in records(source, (text_field, label_field)):
        if r[label_field] not in allowed:
            raise TinyLMError(f"{where}: {label_field} {r[label_field]!r} is not one of {', '.join(allowed)}")
        text = " ".join(str(r[text_field]).replace("\ufffd", "").split())
        if text:
            yield text, r[label_field]


def _rows(pairs: list[tuple[str, str]], prompt, answer) -> Rows:
    for text, label in pairs:
        messages = [
            {"role": "user", "content": prompt(text)},
            {"role": "assistant", "content": answer(label)},
        ]
        yield text, {"messages": messages, "label": answer(label)}


def review_rows(source: str, rng: random.Random) -> Rows:
    return _rows(_unique(_labelled(source, "text", "label", REVIEW_LABELS)), review_prompt, REVIEW_LABELS.get)


def tweet_rows(source: str, rng: random.Random) -> Rows:
    return _rows(_unique(_labelled(source, "text", "sentiment", TWEET_LABELS)), tweet_prompt, str)


def reward(completions: list[str], label: list[str], **_) -> list[float]:
    """1.0 for an answer that is exactly the row's label (surrounding whitespace aside), else 0.0."""
    return [float(text.strip() == str(y)) for text, y in zip(completions, label, strict=True)]


REVIEWS = Task(
    "sentiment-zh",
    "a Chinese review -> 正面 / 负面",
    review_rows,
    needs_source=True,
    example_source="zh/review_sentiment.jsonl",
    reward="label",
    labels="label",
)
TWEETS = Task(
    "sentiment-en",
    "a tweet -> positive / negative / neutral",
    tweet_rows,
    needs_source=True,
    example_source="en/tweet_sentiment.jsonl",
    reward="label",
    labels="label",
)
