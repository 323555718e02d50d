"""Train an n-gram model from sequences of tokens: vocabulary, counts, estimator, one call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import TinyLMError
from .counts import count_ngrams, flat_stream, sentence_stream
from .model import NGramLM, check_order
from .smoothing import METHODS, estimate
from .vocab import token_codes, vocabulary


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
    codes, lengths, token = token_codes(sequences)
    if not len(codes):
        raise TinyLMError("empty corpus: no sentence holds any token to count")
    words, ids = vocabulary(codes, token, min_count, vocab)
    del codes
    stream = flat_stream(ids, lengths)
    del ids  # only the stream is needed from here
    return _fit(stream, words, order, method, k, config)


def train_ids(
    sentences: list[np.ndarray],
    vocab: list[str],
    order: int,
    method: str,
    k: float = 1.0,
    config: dict | None = None,
) -> NGramLM:
    """`train_ngram` on sentences already mapped to ids of `vocab` (which starts with the specials)."""
    return _fit(sentence_stream(sentences), vocab, order, method, k, config)


def _fit(
    stream: np.ndarray, vocab: list[str], order: int, method: str, k: float, config: dict | None
) -> NGramLM:
    """Count and smooth a `<s> ... </s>` id stream of `vocab`."""
    counts = count_ngrams(stream, len(vocab), order)
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
