"""The vocabulary word2vec trains on: words counted, the rare ones dropped, the frequent ones subsampled,
and negatives drawn from the unigram distribution raised to 3/4 (Mikolov et al., 2013)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import TinyLMError


@dataclass(frozen=True)
class Vocab:
    """Words by descending count (ties in order of first appearance), with their counts."""

    words: list[str]
    counts: np.ndarray  # int64, one per word

    def keep_probabilities(self, sample: float) -> np.ndarray:
        """The chance each occurrence of a word survives subsampling, word2vec's formula:
        (sqrt(f / t) + 1) * t / f with f the word's count and t = sample * total count, capped at 1.
        `sample` <= 0 keeps every word."""
        if sample <= 0:
            return np.ones(len(self.words))
        threshold = sample * self.counts.sum()
        return np.minimum(1.0, (np.sqrt(self.counts / threshold) + 1) * threshold / self.counts)

    def noise_cdf(self, power: float = 0.75) -> np.ndarray:
        """Cumulative distribution of negatives, counts ** power; `searchsorted` on it samples a word."""
        weights = self.counts.astype(np.float64) ** power
        cdf = np.cumsum(weights)
        return cdf / cdf[-1]


@dataclass(frozen=True)
class Encoded:
    """A corpus as vocabulary ids: every kept token in order, and the sentence each belongs to."""

    vocab: Vocab
    ids: np.ndarray  # int32, one per kept token
    sentence: np.ndarray  # int32, the sentence number of each kept token
    raw_tokens: int  # tokens read, rare ones included


def encode(sentences: Iterable[list[str]], min_count: int) -> Encoded:
    """Count the words of `sentences`, keep those seen at least `min_count` times, and encode the corpus
    with them; rare words are removed before windows are taken, as word2vec does."""
    index: dict[str, int] = {}
    ids = array("i")  # 4 bytes a token, not a Python int's 28
    lengths = array("q")
    for words in sentences:
        ids.extend(index.setdefault(w, len(index)) for w in words)
        lengths.append(len(words))
    if not ids:
        raise TinyLMError("the corpus holds no words to train on")
    first = np.frombuffer(ids, dtype=np.int32).astype(np.int64)
    counts = np.bincount(first, minlength=len(index))
    order = np.argsort(-counts, kind="stable")  # stable: ties stay in order of first appearance
    order = order[counts[order] >= min_count]
    if len(order) < 2:
        raise TinyLMError(
            f"only {len(order)} word(s) occur at least min_count={min_count} times; "
            "give a larger corpus or a smaller --min-count"
        )
    words = list(index)
    remap = np.full(len(index), -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    new = remap[first]
    sentence = np.repeat(np.arange(len(lengths), dtype=np.int32), np.frombuffer(lengths, dtype=np.int64))
    kept = new >= 0
    vocab = Vocab([words[i] for i in order], counts[order])
    return Encoded(vocab, new[kept].astype(np.int32), sentence[kept], len(ids))
