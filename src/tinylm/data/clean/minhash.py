"""MinHash signatures of 5-gram shingles, with a seeded universal hash family.

A document's shingles are its overlapping n-grams of tokens (n = 5), where a token is a word in text
written with spaces and a single Han or kana character in text written without them (see `words.py`), so
Chinese gets character 5-grams and English word 5-grams, and mixed text a bit of both. Tokens are
lower-cased and punctuation is ignored, so a changed comma does not change a shingle. A text with fewer
than n tokens is one shingle of all of them.

Each shingle is hashed to 32 bits (CRC-32 of its UTF-8 bytes) and reduced mod p, and permutation i is
the universal hash h_i(x) = (a_i x + b_i) mod p with the Mersenne prime p = 2^31 - 1 and a_i in [1, p),
b_i in [0, p) drawn from `seed`: a_i x + b_i < 2^62 never overflows 64 bits, and a_i spanning the whole
field makes a_i x wrap around p many times, which keeps the permutations independent of each other (a
small a_i would leave h_i nearly monotone in x, and the estimates correlated). The signature keeps min_x h_i(x) for every i;
the share of equal entries of two signatures estimates the Jaccard similarity of their shingle sets with
standard deviation sqrt(J (1 - J) / num_perm).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from .words import UNSEGMENTED

MERSENNE = np.uint64((1 << 31) - 1)
_BITS = np.uint64(31)
SHINGLE = 5
_TOKEN = re.compile(rf"[{UNSEGMENTED}]|[^\W_{UNSEGMENTED}]+")


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    """The set of n-grams of lower-cased tokens (see the module docstring); empty for a text without tokens."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) <= n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def hash32(items: set[str] | list[str]) -> np.ndarray:
    """32-bit hashes of strings, stable across processes and runs (unlike Python's `hash`)."""
    return np.fromiter((zlib.crc32(s.encode("utf-8")) for s in items), dtype=np.uint64, count=len(items))


class MinHasher:
    """`num_perm` seeded hash functions; `signature(hashes)` is the MinHash of a set of 32-bit values."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, int(MERSENNE), size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(MERSENNE), size=num_perm, dtype=np.uint64)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The (num_perm,) uint64 minimum of each hash function over `hashes` (uint64 values < 2^32)."""
        if len(hashes) == 0:
            raise ValueError("a MinHash signature needs at least one element")
        values = (hashes % MERSENNE)[:, None] * self.a[None, :] + self.b[None, :]
        for _ in range(2):  # v mod 2^31 - 1 by folding the high bits onto the low ones: < 2^31 + 2 after two
            values = (values & MERSENNE) + (values >> _BITS)
        values = np.where(values >= MERSENNE, values - MERSENNE, values)
        return values.min(axis=0)

    def text_signature(self, text: str) -> np.ndarray | None:
        """The signature of a text's shingles, or None for a text without a single token."""
        found = shingles(text)
        return self.signature(hash32(sorted(found))) if found else None


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    """The share of equal entries of two signatures: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(a == b))
