"""Locality-sensitive hashing of MinHash signatures, and the clusters of near-duplicates it finds.

The signature is cut into b bands of r rows; two documents are candidates when any band is equal, which
happens with probability 1 - (1 - s^r)^b for Jaccard similarity s (the S-curve). `optimal_bands` chooses
(b, r) with b r <= num_perm minimising the weighted area of false positives (the curve below the threshold)
plus false negatives (one minus the curve above it), the rule `datasketch.MinHashLSH` uses. The curve is a
polynomial of degree b r <= num_perm in s, so Gauss-Legendre quadrature with num_perm / 2 + 1 nodes
integrates it exactly.

Candidates are joined with union-find; the root of every cluster is its first document (the smallest
index), which is the one kept.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from ...errors import TinyLMError


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two documents of Jaccard similarity `s` share at least one band."""
    return 1 - (1 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def _quadrature(lo: float, hi: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on [lo, hi]."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    return (hi - lo) / 2 * x + (hi + lo) / 2, (hi - lo) / 2 * w


@lru_cache(maxsize=64)
def optimal_bands(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + false negative areas for `threshold`."""
    if not 0 < threshold < 1:
        raise TinyLMError(f"threshold must be strictly between 0 and 1, got {threshold}")
    if num_perm < 2:
        raise TinyLMError(f"num_perm must be at least 2, got {num_perm}")
    nodes = num_perm // 2 + 1
    below, below_w = _quadrature(0.0, threshold, nodes)
    above, above_w = _quadrature(threshold, 1.0, nodes)
    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1)[:, None]
        fp = candidate_probability(below[None, :], b, r) @ below_w
        fn = (1 - candidate_probability(above[None, :], b, r)) @ above_w
        error = fp * false_positive_weight + fn * false_negative_weight
        i = int(np.argmin(error))
        if error[i] < best_error:
            best, best_error = (b, i + 1), float(error[i])
    return best


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band, stable across processes: equal keys mean (almost surely) equal bands."""
    raw = signature[: bands * rows].astype("<u8").tobytes()
    step = rows * 8
    return [
        int.from_bytes(hashlib.blake2b(raw[i : i + step], digest_size=8).digest(), "little")
        for i in range(0, len(raw), step)
    ]


class UnionFind:
    """Disjoint sets of document indices whose root is always the smallest index (the first seen)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


class LSHIndex:
    """Band tables: a document joins the cluster of every earlier document that shares a band with it."""

    def __init__(self, bands: int) -> None:
        self.tables: list[dict[int, int]] = [{} for _ in range(bands)]
        self.clusters = UnionFind()

    def add(self, index: int, keys: list[int]) -> None:
        for table, key in zip(self.tables, keys, strict=True):
            first = table.setdefault(key, index)
            if first != index:
                self.clusters.union(first, index)
