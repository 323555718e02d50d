"""The estimators: from n-gram counts to interpolated probabilities and backoff weights, order by order.

Every method here is an interpolated model,

    p(w | h) = alpha(h w) + gamma(h) * p(w | h')        (h' = h without its first token)

and a seen n-gram's probability is stored interpolated already, with gamma(h) as h's backoff weight. So
p(w | h) of an unseen `h w` is gamma(h) * p(w | h'), which is exactly how an ARPA file is read, and the
same arrays serve scoring, sampling and export. Order 1 interpolates with the uniform distribution over
the predictable vocabulary (everything but `<s>`), which gives `<unk>` its mass.

- mkn: interpolated modified Kneser-Ney (Chen & Goodman 1998), as KenLM's `lmplz` builds it: three
  discounts D1, D2, D3+ per order from that order's count-of-counts, the highest order on raw counts and
  lower orders on continuation counts (the number of distinct tokens seen before an n-gram; an n-gram
  that starts with `<s>` keeps its raw count, since nothing can come before `<s>`).
- kn: the same with one discount per order, D = n1 / (n1 + 2 n2).
- wb: Witten-Bell, raw counts at every order; gamma(h) = T(h) / (c(h) + T(h)), T(h) the distinct followers.
- addk: add-k at every order, the k |V| added counts spread by the next lower order (at order 1 this is
  add-k on the uniform distribution); gamma(h) = k |V| / (c(h) + k |V|).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.jsonl import warn
from ..errors import TinyLMError
from .counts import BOS, NGramCounts

METHODS = ("mkn", "kn", "wb", "addk")
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
"""lmplz's `--discount_fallback` defaults, used for an order whose count-of-counts gives no valid discounts."""


@dataclass
class Estimate:
    """Natural-log probabilities of every seen n-gram and backoff weights of every context, per order."""

    logp: list[np.ndarray]
    """logp[k-1][i]: ln p(last token | first k-1 tokens) of k-gram i (order 1: of each vocabulary id)."""
    logbow: list[np.ndarray]
    """logbow[k-1][i]: ln gamma of k-gram i as a context, 0 where it has no followers (orders 1..N-1)."""
    discounts: list[list[float]] = field(default_factory=list)
    """Per order, the discounts used (mkn: D1, D2, D3+; kn: D)."""


def count_of_counts(counts: np.ndarray) -> list[int]:
    """n1..n4: how many n-grams were seen exactly 1, 2, 3, 4 times."""
    n = np.bincount(np.minimum(counts, 5).astype(np.int64), minlength=6)
    return [int(x) for x in n[1:5]]


def kenlm_discounts(n: list[int]) -> list[float] | None:
    """D1, D2, D3+ from count-of-counts n1..n4 (Chen & Goodman eq. 26, as lmplz computes them):
    Y = n1 / (n1 + 2 n2), D_i = i - (i + 1) Y n_{i+1} / n_i; None if some D_i falls outside [0, i]."""
    if n[0] == 0 or n[1] == 0 or n[2] == 0:
        return None
    y = n[0] / (n[0] + 2 * n[1])
    d = [i - (i + 1) * y * n[i] / n[i - 1] for i in (1, 2, 3)]
    return d if all(0 <= x <= i for i, x in zip((1, 2, 3), d, strict=True)) else None


def kn_discount(n: list[int]) -> list[float] | None:
    """The one discount of interpolated Kneser-Ney, D = n1 / (n1 + 2 n2), as [D, D, D]; None without n1, n2."""
    return [n[0] / (n[0] + 2 * n[1])] * 3 if n[0] and n[1] else None


def adjusted_counts(counts: NGramCounts, k: int, method: str) -> np.ndarray:
    """The counts order k is estimated from: continuation counts below the top order for KN, else raw."""
    raw = counts.counts[k - 1]
    if method not in ("mkn", "kn") or k == counts.order:
        return raw.copy()
    continuation = np.bincount(counts.suffix[k], minlength=len(raw)).astype(np.int64)
    return np.where(counts.starts_bos[k - 1], raw, continuation)


def _discounts(a: np.ndarray, k: int, method: str) -> list[float]:
    n = count_of_counts(a[a > 0])
    d = kenlm_discounts(n) if method == "mkn" else kn_discount(n)
    if d is None:
        warn(f"order {k}: count-of-counts {n} give no valid discounts; using {FALLBACK_DISCOUNTS}")
        d = list(FALLBACK_DISCOUNTS) if method == "mkn" else [FALLBACK_DISCOUNTS[0]] * 3
    return d


def estimate(counts: NGramCounts, method: str = "mkn", k: float = 1.0) -> Estimate:
    """Interpolated probabilities of every seen n-gram, lowest order first (see the module docstring)."""
    if method not in METHODS:
        raise TinyLMError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "addk" and not k > 0:
        raise TinyLMError(f"add-k needs k > 0, got {k}")
    V = counts.vocab_size
    predictable = V - 1  # every token but <s>
    probs, gammas, used = [], [], []
    for order in range(1, counts.order + 1):
        a = adjusted_counts(counts, order, method).astype(np.float64)
        if order == 1:
            a[BOS] = 0.0
        ctx = counts.prefix(order)
        n_ctx = 1 if order == 1 else len(counts.keys[order - 2])
        total = np.bincount(ctx, weights=a, minlength=n_ctx)
        discount: np.ndarray | float = 0.0
        if method in ("mkn", "kn"):
            d = _discounts(a, order, method)
            used.append(d if method == "mkn" else d[:1])
            discount = np.array([0.0, *d])[np.minimum(a, 3).astype(np.int64)]
            freed = np.bincount(ctx, weights=discount, minlength=n_ctx)
        elif method == "wb":
            freed = np.bincount(ctx, weights=(a > 0).astype(np.float64), minlength=n_ctx)  # T(h)
            total = total + freed
        else:
            freed = np.where(total > 0, k * predictable, 0.0)
            total = total + freed
        has = total > 0
        gamma = np.where(has, freed / np.where(has, total, 1.0), 1.0)
        alpha = (a - discount) / np.where(has, total, 1.0)[ctx]
        if order == 1:
            below = np.full(V, 1.0 / predictable)
            below[BOS] = 0.0
        else:
            below = probs[-1][counts.suffix[order - 1]]
            gammas.append(gamma)  # the backoff weights of the order-1 table's n-grams as contexts
        probs.append(alpha + gamma[ctx] * below)
    with np.errstate(divide="ignore"):
        return Estimate([np.log(p) for p in probs], [np.log(g) for g in gammas], used)
