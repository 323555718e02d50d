"""Tokens to vocabulary ids with a Python step per distinct token, never per token.

Every token is first given an integer code (a character its code point, through UTF-32; another token
the place where it first occurs); the distinct codes are found by one `bincount`, only they become
Python strings to look up, and the ids of all tokens are then one array lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import TinyLMError
from .counts import UNK
from .model import SPECIALS


def token_codes(sentences: list[Sequence[str]]) -> tuple[np.ndarray, Callable[[int], str]]:
    """One integer per token of all the sentences, equal for equal tokens, and the token of a code.

    Text (every sentence a `str`, as a character model's are) is coded by its code points, with no
    Python step per character; other tokens by the place where each first occurs.
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


def _distinct(codes: np.ndarray, token: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(occurrences of every code, the codes that occur, their tokens)."""
    frequency = np.bincount(codes)
    seen = np.flatnonzero(frequency)
    return frequency, seen, [token(int(c)) for c in seen]


def _lookup(size: int, seen: np.ndarray, names: list[str], index: dict[str, int]) -> np.ndarray:
    """code -> id in `index` (`<unk>` outside it), for codes below `size`."""
    lookup = np.full(size, UNK, dtype=np.int64)
    lookup[seen] = [index.get(t, UNK) for t in names]
    return lookup


def vocabulary(
    codes: np.ndarray, token: Callable[[int], str], min_count: int, vocab: Sequence[str] | None
) -> tuple[list[str], np.ndarray]:
    """The vocabulary to train with and the id of every coded token in it (`<unk>` outside it).

    Without `vocab`: the specials, then every token seen at least `min_count` times, most frequent first
    (ties by token). With it: `vocab`, the specials moved to the front.
    """
    frequency, seen, names = _distinct(codes, token)
    reserved = [t for t in SPECIALS if t in set(names)]
    if reserved:
        raise TinyLMError(f"the tokens {', '.join(reserved)} are reserved and cannot appear in training text")
    if vocab is None:
        ranked = by_frequency(frequency[seen], names)
        kept = ranked[frequency[seen[ranked]] >= min_count]
        words = [*SPECIALS, *(names[i] for i in kept)]
    else:
        words = list(vocab)
        if words[:3] != list(SPECIALS):
            words = [*SPECIALS, *(t for t in words if t not in SPECIALS)]
    lookup = _lookup(len(frequency), seen, names, {t: i for i, t in enumerate(words)})
    return words, lookup[codes]


def encode(sentences: list[Sequence[str]], index: dict[str, int]) -> list[np.ndarray]:
    """Each sentence as int64 ids of the vocabulary `index` (`<unk>` outside it), as `NGramLM.ids` gives."""
    if not sentences:
        return []
    codes, token = token_codes(sentences)
    frequency, seen, names = _distinct(codes, token)
    ids = _lookup(len(frequency), seen, names, index)[codes]
    return np.split(ids, np.cumsum([len(s) for s in sentences])[:-1])
