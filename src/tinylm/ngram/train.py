"""Train an n-gram model from sequences of tokens: vocabulary, counts, estimator, one call."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import TinyLMError
from .counts import UNK, count_ngrams, sentence_stream
from .model import SPECIALS, NGramLM, check_order
from .smoothing import METHODS, estimate


def build_vocab(counts: Counter, min_count: int = 1) -> list[str]:
    """The specials, then every token seen at least `min_count` times, most frequent first (ties by token)."""
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *kept]


def train_ngram(
    sequences: Iterable[Sequence[str]],
    order: int = 3,
    method: str = "mkn",
    k: float = 1.0,
    min_count: int = 1,
    vocab: Sequence[str] | None = None,
    config: dict | None = None,
) -> NGramLM:
    """An n-gram model of `order` estimated with `method` (mkn, kn, wb, addk with `k`) from `sequences`.

    Each sequence is one sentence, scored as `<s> tokens </s>`. Tokens seen fewer than `min_count` times
    (or outside `vocab`, when given) are counted as `<unk>`. `config` is recorded in the model (its unit).
    """
    check_order(order)
    if method not in METHODS:
        raise TinyLMError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if min_count < 1:
        raise TinyLMError(f"min_count must be at least 1, got {min_count}")
    sentences = [list(s) for s in sequences]
    frequency = Counter(itertools.chain.from_iterable(sentences))
    if not frequency:
        raise TinyLMError("empty corpus: no sentence holds any token to count")
    reserved = [t for t in SPECIALS if t in frequency]
    if reserved:
        raise TinyLMError(f"the tokens {', '.join(reserved)} are reserved and cannot appear in training text")
    words = list(vocab) if vocab is not None else build_vocab(frequency, min_count)
    if vocab is not None and words[:3] != list(SPECIALS):
        words = [*SPECIALS, *(t for t in words if t not in SPECIALS)]
    index = {t: i for i, t in enumerate(words)}
    ids = [np.fromiter(map(index.get, s, itertools.repeat(UNK)), np.int64, len(s)) for s in sentences]
    return train_ids(ids, words, order, method, k, config)


def train_ids(
    sentences: list[np.ndarray],
    vocab: list[str],
    order: int,
    method: str,
    k: float = 1.0,
    config: dict | None = None,
) -> NGramLM:
    """`train_ngram` on sentences already mapped to ids of `vocab` (which starts with the specials)."""
    counts = count_ngrams(sentence_stream(sentences), len(vocab), order)
    est = estimate(counts, method, k)
    meta = {
        "method": method,
        **({"k": k} if method == "addk" else {}),
        "discounts": est.discounts,
        **(config or {}),
    }
    meta["ngrams"] = [int(len(c)) if i else int((c > 0).sum()) for i, c in enumerate(counts.counts)]
    keys = [counts.keys[0], *counts.keys[1:]]
    return NGramLM(vocab, keys, est.logp, est.logbow, meta)
