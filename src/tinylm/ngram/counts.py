"""N-gram counts as sorted integer arrays, one table per order, with no Python object per n-gram.

The training text is one flat array of vocabulary ids in which every sentence is `<s> w1 ... wn </s>`.
The k-grams of order k are numbered by sorting their keys

    key = (id of the k-gram's first k-1 tokens, its prefix, in the order k-1 table) * V + last token

so a table is a sorted int64 array (one sort of the stream's windows builds every order's table, see
`count_ngrams`), the prefix of entry i is `keys[i] // V`, and all the k-grams after one context are one
contiguous slice. Order 1 is the whole vocabulary, id = token.
Each k-gram also records the id of its suffix (its last k-1 tokens) in the order k-1 table, which is
where interpolation and continuation counts look. This is the layout of a trie (KenLM's, in arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOS, EOS, UNK = 1, 2, 0
"""Reserved vocabulary ids of `<s>`, `</s>` and `<unk>` in every n-gram vocabulary."""
_CHUNK = 1 << 20
"""Rows compared at once when sorted windows are compared with their neighbours."""


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
    """`sentence_stream` of sentences given as one array of all their ids and the length of each.

    int32 (any vocabulary fits), half the memory of int64 for the largest array of training.
    """
    stream = np.empty(len(ids) + 2 * len(lengths), dtype=np.int32)
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
    `bits` bits each, first token highest: one word (sorted in place, no permutation) whenever
    V^order fits in 63 bits, else a lexsort of the words.
    """

    words: list[np.ndarray]
    bits: int
    per_word: int
    order: int
    shared: np.ndarray | None = None
    """shared[r]: how many leading tokens sorted row r shares with row r - 1 (0 for row 0); int8."""

    def shift(self, j: int) -> int:
        """Where token j sits in its word: how many bits of later tokens lie below it."""
        w = j // self.per_word
        width = min(self.per_word, self.order - w * self.per_word)
        return self.bits * (width - 1 - j % self.per_word)

    def tokens(self, rows: np.ndarray, j: int) -> np.ndarray:
        """Token j (from 0) of the given rows, + 1, 0 past the sentence."""
        return (self.words[j // self.per_word][rows] >> self.shift(j)) & ((1 << self.bits) - 1)

    def keep_first(self, rows: np.ndarray, j: int) -> None:
        """Clear tokens j.. of the given rows (they lie past the rows' sentence)."""
        for t in range(j, self.order):
            self.words[t // self.per_word][rows] &= ~(((1 << self.bits) - 1) << self.shift(t))

    def sort(self) -> None:
        """Sort the rows, then keep of their neighbours only `shared`: one byte a row instead of a word."""
        if len(self.words) == 1:
            self.words[0].sort()
        else:
            rank = np.lexsort(self.words[::-1])
            self.words = [w[rank] for w in self.words]
        n = len(self.words[0])
        self.shared = np.zeros(n, dtype=np.int8)
        for lo in range(1, n, _CHUNK):  # by chunks: the XOR of two words is as big as a word
            self._share(lo, min(lo + _CHUNK, n))

    def _share(self, lo: int, hi: int) -> None:
        """`shared` of sorted rows lo..hi-1 (lo >= 1)."""
        shared = self.shared[lo:hi]
        for w, word in enumerate(self.words):
            change = word[lo:hi] ^ word[lo - 1 : hi - 1]
            equal_so_far = shared == w * self.per_word  # every token of the earlier words agrees
            for j in range(w * self.per_word, min((w + 1) * self.per_word, self.order)):
                shared += equal_so_far & (change < (1 << self.shift(j)))  # ... and the tokens up to j

    def starts(self, k: int) -> np.ndarray:
        """The first row of each run of sorted rows that agree on their first k tokens."""
        return np.flatnonzero(self.shared < k)


def sorted_windows(stream: np.ndarray, order: int, vocab_size: int) -> Windows:
    """The rows of `order` tokens at every position of a `<s> ... </s>` stream, sorted (see `Windows`).

    Rows are packed straight from the stream, then only the few rows near a sentence's end (or the
    stream's) are cut, so building costs a shift, an OR and an add per token and order, no copies."""
    bits = max(int(vocab_size).bit_length(), 1)
    n = len(stream)
    windows = Windows([], bits, 63 // bits, order)
    for first in range(0, order, windows.per_word):
        word, ones = np.zeros(n, dtype=np.int64), 0
        for j in range(first, min(first + windows.per_word, order)):
            word <<= bits
            np.bitwise_or(word[: n - j], stream[j:], out=word[: n - j])
            ones = (ones << bits) | 1
        word += ones  # every token + 1 (the fields are apart, so adding is OR-ing)
        windows.words.append(word)
    ends = np.append(np.flatnonzero(stream == BOS), n)  # where a row's sentence has ended
    for j in range(1, order):  # the row j places before an end keeps its first j tokens
        windows.keep_first(ends[ends >= j] - j, j)
    windows.sort()
    return windows


def count_ngrams(stream: np.ndarray, vocab_size: int, order: int) -> NGramCounts:
    """Count every n-gram of orders 1..order that ends on a predicted token (any token but `<s>`).

    An n-gram never reaches back past its sentence's `<s>`; so the first tokens of a sentence are seen
    with shorter histories only, exactly as they are scored. Every order comes from one sort of the
    stream's windows: the k-grams are the runs of sorted rows that agree on their first k tokens (none
    past the sentence), already in table order, since the tables sort k-grams lexicographically too.
    """
    unigrams = np.bincount(stream, minlength=vocab_size).astype(np.int64)
    unigrams[BOS] = 0  # never predicted
    starts_bos = np.zeros(vocab_size, dtype=bool)
    starts_bos[BOS] = True
    counts = NGramCounts(
        vocab_size, order, [np.arange(vocab_size, dtype=np.int64)], [unigrams], [None], [starts_bos]
    )
    if order == 1:
        return counts
    windows = sorted_windows(stream, order, vocab_size)
    rows = None
    for k in range(2, order + 1):
        rows = _add_order(counts, windows, windows.starts(k), rows)
    return counts


def _add_order(
    counts: NGramCounts, windows: Windows, starts: np.ndarray, above: np.ndarray | None
) -> np.ndarray:
    """Append order k's table from the first sorted row of each run that agrees on k tokens (`starts`) and
    the first row of each (k-1)-gram (`above`); returns the first row of each k-gram, for order k+1."""
    k, V = len(counts.keys) + 1, counts.vocab_size
    sizes = np.diff(np.append(starts, len(windows.shared)))
    last = windows.tokens(starts, k - 1)
    seen = last > 0  # the run's k-th token is inside its sentence: a k-gram
    rows, sizes, last = starts[seen], sizes[seen], last[seen] - 1
    first = windows.tokens(rows, 0) - 1
    if k == 2:
        prefix, suffix = first, last
    else:  # a k-gram's rows lie inside those of its first k-1 tokens, which start at or before its own
        prefix = np.searchsorted(above, rows, side="right") - 1
        suffix = np.searchsorted(counts.keys[k - 2], counts.suffix[k - 2][prefix] * V + last)
    counts.keys.append(prefix * V + last)
    counts.counts.append(sizes.astype(np.int64))
    counts.suffix.append(suffix.astype(np.int64))
    counts.starts_bos.append(first == BOS)
    return rows
