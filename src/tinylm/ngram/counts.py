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
    lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
    ids = np.concatenate(sentences) if sentences else np.empty(0, dtype=np.int64)
    return flat_stream(ids, lengths)


def flat_stream(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`sentence_stream` of sentences given as one array of all their ids and the length of each."""
    stream = np.empty(len(ids) + 2 * len(lengths), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 2)[:-1]]).astype(np.int64)
    body = np.ones(len(stream), dtype=bool)
    body[starts] = body[starts + lengths + 1] = False
    stream[starts], stream[starts + lengths + 1] = BOS, EOS
    stream[body] = ids
    return stream


def distance_from_bos(stream: np.ndarray) -> np.ndarray:
    """For each position, how many tokens of its sentence come before it (0 at `<s>`)."""
    starts = np.flatnonzero(stream == BOS)
    lengths = np.diff(np.append(starts, len(stream)))
    return np.arange(len(stream)) - np.repeat(starts, lengths)


@dataclass
class Windows:
    """The `order` tokens that start at every position of a stream, as rows sorted lexicographically.

    Token t is stored as t + 1 and a place past the row's sentence (after its `</s>`) as 0, so a row that
    runs out of its sentence sorts before every row that goes on, and the k-grams that start at a place
    are its row's first k tokens when none is 0. A row is packed into int64 words of `per_word` tokens of
    `bits` bits each: one word (sorted in place, no permutation) whenever V^order fits in 63 bits.
    """

    words: list[np.ndarray]
    bits: int
    per_word: int
    order: int

    def column(self, j: int) -> np.ndarray:
        """Token j (from 0) of every sorted row, + 1, 0 past the sentence."""
        w = j // self.per_word
        width = min(self.per_word, self.order - w * self.per_word)
        shift = self.bits * (width - 1 - j % self.per_word)
        return (self.words[w] >> shift) & ((1 << self.bits) - 1)


def sorted_windows(stream: np.ndarray, order: int, vocab_size: int) -> Windows:
    """The rows of `order` tokens at every position of a `<s> ... </s>` stream, sorted (see `Windows`)."""
    bits = max(int(vocab_size).bit_length(), 1)
    per_word = 63 // bits
    n = len(stream)
    padded = np.concatenate([stream, np.full(order, BOS, dtype=stream.dtype)])  # the end ends a sentence
    inside = np.ones(n, dtype=bool)  # token j of the row at i is still in i's sentence
    words = []
    for first in range(0, order, per_word):
        word = np.zeros(n, dtype=np.int64)
        for j in range(first, min(first + per_word, order)):
            token = padded[j : j + n]
            if j:
                inside &= token != BOS
            word <<= bits
            word |= np.where(inside, token + 1, 0)
        words.append(word)
    if len(words) == 1:
        words[0].sort()
    else:
        rank = np.lexsort(words[::-1])
        words = [w[rank] for w in words]
    return Windows(words, bits, per_word, order)


def count_ngrams(stream: np.ndarray, vocab_size: int, order: int) -> NGramCounts:
    """Count every n-gram of orders 1..order that ends on a predicted token (any token but `<s>`).

    An n-gram never reaches back past its sentence's `<s>`; so the first tokens of a sentence are seen
    with shorter histories only, exactly as they are scored. Every order comes from one sort of the
    stream's windows: the k-grams are the runs of sorted rows that agree on their first k tokens (none
    past the sentence), already in table order, since the tables sort k-grams lexicographically too.
    """
    unigrams = np.bincount(stream[stream != BOS], minlength=vocab_size).astype(np.int64)
    starts_bos = np.zeros(vocab_size, dtype=bool)
    starts_bos[BOS] = True
    counts = NGramCounts(
        vocab_size, order, [np.arange(vocab_size, dtype=np.int64)], [unigrams], [None], [starts_bos]
    )
    if order == 1:
        return counts
    windows = sorted_windows(stream, order, vocab_size)
    first = windows.column(0)
    new = np.ones(len(first), dtype=bool)  # new[r]: row r differs from row r-1 in its first k tokens
    new[1:] = first[1:] != first[:-1]
    rows = np.flatnonzero(new)
    for k in range(2, order + 1):
        token = windows.column(k - 1)
        new[1:] |= token[1:] != token[:-1]
        rows = _add_order(counts, first, token, np.flatnonzero(new), rows)
    return counts


def _add_order(
    counts: NGramCounts, first: np.ndarray, token: np.ndarray, starts: np.ndarray, above: np.ndarray
) -> np.ndarray:
    """Append the next order's table from the first sorted row of each run (`starts`) and of each
    (k-1)-gram's run (`above`); returns the first row of each k-gram, which the next order needs."""
    k, V = len(counts.keys) + 1, counts.vocab_size
    sizes = np.diff(np.append(starts, len(token)))
    seen = token[starts] > 0  # the run's k-th token is inside its sentence: a k-gram
    rows, sizes = starts[seen], sizes[seen]
    last = token[rows] - 1
    if k == 2:
        prefix, suffix = first[rows] - 1, last
    else:  # a k-gram's rows lie inside those of its first k-1 tokens, which start at or before its own
        prefix = np.searchsorted(above, rows, side="right") - 1
        suffix = np.searchsorted(counts.keys[k - 2], counts.suffix[k - 2][prefix] * V + last)
    counts.keys.append(prefix * V + last)
    counts.counts.append(sizes.astype(np.int64))
    counts.suffix.append(suffix.astype(np.int64))
    counts.starts_bos.append(first[rows] == BOS + 1)
    return rows
