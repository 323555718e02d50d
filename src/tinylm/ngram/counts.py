"""N-gram counts as sorted integer arrays, one table per order, with no Python object per n-gram.

The training text is one flat array of vocabulary ids in which every sentence is `<s> w1 ... wn </s>`.
The k-grams of order k are numbered by sorting their keys

    key = (id of the k-gram's first k-1 tokens, its prefix, in the order k-1 table) * V + last token

so a table is a sorted int64 array (`np.unique` builds it), the prefix of entry i is `keys[i] // V`, and
all the k-grams after one context are one contiguous slice. Order 1 is the whole vocabulary, id = token.
Each k-gram also records the id of its suffix (its last k-1 tokens) in the order k-1 table, which is
where interpolation and continuation counts look. This is the layout of a trie (KenLM's, in arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOS, EOS, UNK = 1, 2, 0
"""Reserved vocabulary ids of `<s>`, `</s>` and `<unk>` in every n-gram vocabulary."""


@dataclass
class NGramCounts:
    """Raw counts of every n-gram of orders 1..order seen in the training stream."""

    vocab_size: int
    order: int
    keys: list[np.ndarray]
    """keys[k-1]: sorted int64 keys of the k-grams (order 1: arange(V))."""
    counts: list[np.ndarray]
    """counts[k-1][i]: occurrences of k-gram i (order 1: of each token as a predicted token)."""
    suffix: list[np.ndarray | None]
    """suffix[k-1][i]: id of k-gram i's last k-1 tokens in the order k-1 table (None for order 1)."""
    starts_bos: list[np.ndarray]
    """starts_bos[k-1][i]: k-gram i begins with `<s>`, so nothing can precede it."""

    def prefix(self, k: int) -> np.ndarray:
        """Id of each k-gram's first k-1 tokens in the order k-1 table (all 0 for order 1: the empty context)."""
        keys = self.keys[k - 1]
        return keys // self.vocab_size if k > 1 else np.zeros(len(keys), dtype=np.int64)


def sentence_stream(sentences: list[np.ndarray]) -> np.ndarray:
    """One flat id array `<s> s1 </s> <s> s2 </s> ...` from sentences of ids (without markers)."""
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    stream = np.empty(int(lengths.sum()) + 2 * len(sentences), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 2)[:-1]]).astype(np.int64)
    body = np.ones(len(stream), dtype=bool)
    body[starts] = body[starts + lengths + 1] = False
    stream[starts], stream[starts + lengths + 1] = BOS, EOS
    if len(sentences):
        stream[body] = np.concatenate([np.asarray(s, dtype=np.int64) for s in sentences])
    return stream


def distance_from_bos(stream: np.ndarray) -> np.ndarray:
    """For each position, how many tokens of its sentence come before it (0 at `<s>`)."""
    starts = np.flatnonzero(stream == BOS)
    lengths = np.diff(np.append(starts, len(stream)))
    return np.arange(len(stream)) - np.repeat(starts, lengths)


def count_ngrams(stream: np.ndarray, vocab_size: int, order: int) -> NGramCounts:
    """Count every n-gram of orders 1..order that ends on a predicted token (any token but `<s>`).

    An n-gram never reaches back past its sentence's `<s>`; so the first tokens of a sentence are seen
    with shorter histories only, exactly as they are scored.
    """
    dist = distance_from_bos(stream)
    unigrams = np.bincount(stream[dist >= 1], minlength=vocab_size).astype(np.int64)
    starts_bos = np.zeros(vocab_size, dtype=bool)
    starts_bos[BOS] = True
    keys, counts, suffix, bos = [np.arange(vocab_size, dtype=np.int64)], [unigrams], [None], [starts_bos]
    ids = stream.astype(np.int64)  # id of the (k-1)-gram ending at each position, where there is one
    for k in range(2, order + 1):
        at = np.flatnonzero(dist >= k - 1)
        table, inverse, n = np.unique(
            ids[at - 1] * vocab_size + stream[at], return_inverse=True, return_counts=True
        )
        suffix_ids = np.empty(len(table), dtype=np.int64)
        suffix_ids[inverse] = ids[at]
        starts = np.zeros(len(table), dtype=bool)
        starts[inverse[dist[at] == k - 1]] = True
        keys.append(table)
        counts.append(n.astype(np.int64))
        suffix.append(suffix_ids)
        bos.append(starts)
        ids = np.full(len(stream), -1, dtype=np.int64)
        ids[at] = inverse
    return NGramCounts(vocab_size, order, keys, counts, suffix, bos)
