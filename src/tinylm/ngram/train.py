"""Train an n-gram model from sequences of tokens: vocabulary, counts, estimator, one call."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..errors import TinyLMError
from .counts import UNK, count_ngrams, flat_stream, sentence_stream
from .model import SPECIALS, NGramLM, check_order
from .smoothing import METHODS, estimate


def token_codes(sentences: list[Sequence[str]]) -> tuple[np.ndarray, Callable[[int], str]]:
    """One integer per token of all the sentences, equal for equal tokens, and the token of a code.

    Text (every sentence a `str`, as a character model's are) is coded by its code points through UTF-32,
    with no Python step per character; other tokens by the place where each first occurs.
    """
    if all(isinstance(s, str) for s in sentences):
        text = "".join(sentences).encode("utf-32-le", errors="surrogatepass")
        return np.frombuffer(text, dtype=np.uint32), chr
    flat = list(itertools.chain.from_iterable(sentences))
    first: dict[str, int] = {}
    return np.fromiter(map(first.setdefault, flat, itertools.count()), np.int64, len(flat)), flat.__getitem__


def by_frequency(counts: np.ndarray, names: list[str]) -> np.ndarray:
    """Indices of the tokens, most frequent first, ties by token; with no Python tuple per token, whose
    allocations would set the garbage collector scanning every object of the corpus."""
    alphabetical = np.empty(len(names), dtype=np.int64)
    alphabetical[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    return np.lexsort((alphabetical, -counts))


def vocabulary(
    codes: np.ndarray, token: Callable[[int], str], min_count: int, vocab: Sequence[str] | None
) -> tuple[list[str], np.ndarray]:
    """The vocabulary and the id of every coded token in it (`<unk>` outside it).

    Without `vocab`: the specials, then every token seen at least `min_count` times, most frequent first
    (ties by token). Only the distinct tokens are Python objects; the ids are one array lookup.
    """
    frequency = np.bincount(codes)
    seen = np.flatnonzero(frequency)
    names = [token(int(c)) for c in seen]
    reserved = [t for t in SPECIALS if t in set(names)]
    if reserved:
        raise TinyLMError(f"the tokens {', '.join(reserved)} are reserved and cannot appear in training text")
    lookup = np.full(len(frequency), UNK, dtype=np.int64)
    if vocab is None:
        ranked = by_frequency(frequency[seen], names)
        kept = ranked[frequency[seen[ranked]] >= min_count]
        words = [*SPECIALS, *(names[i] for i in kept)]
        lookup[seen[kept]] = np.arange(len(SPECIALS), len(words))
    else:
        words = list(vocab)
        if words[:3] != list(SPECIALS):
            words = [*SPECIALS, *(t for t in words if t not in SPECIALS)]
        index = {t: i for i, t in enumerate(words)}
        lookup[seen] = [index.get(t, UNK) for t in names]
    return words, lookup[codes]


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
    sentences = [s if isinstance(s, str) else list(s) for s in sequences]
    codes, token = token_codes(sentences)
    if not len(codes):
        raise TinyLMError("empty corpus: no sentence holds any token to count")
    words, ids = vocabulary(codes, token, min_count, vocab)
    del codes
    stream = flat_stream(ids, np.fromiter(map(len, sentences), np.int64, len(sentences)))
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
