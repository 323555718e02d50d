"""Tokens to vocabulary ids with a Python step per distinct token, never per token.

Every token is first given an integer code (a character its code point, through UTF-32; another token
the place where it first occurs); the distinct codes are found by one `bincount`, only they become
Python strings to look up, and the ids of all tokens are then one array lookup.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..errors import TinyLMError
from .counts import UNK
from .model import SPECIALS


def token_codes(sentences: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, Callable[[int], str]]:
    """(one integer per token, equal for equal tokens; the length of each sentence; the token of a code),
    reading the sentences once.

    Text (every sentence a `str`, as a character model's are) is coded by its code points, with no
    Python step per character; other tokens by the place where each is first seen, sentence by sentence,
    so that only the distinct tokens stay alive, not a string per token.
    """
    texts: list[str] = []
    sentences = iter(sentences)
    for s in sentences:
        if not isinstance(s, str):
            return _first_seen_codes(itertools.chain(texts, [s], sentences))
        texts.append(s)
    codes = np.frombuffer("".join(texts).encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    return codes, np.fromiter(map(len, texts), np.int64, len(texts)), chr


def _first_seen_codes(
    sentences: Iterable[Sequence[str]],
) -> tuple[np.ndarray, np.ndarray, Callable[[int], str]]:
    """`token_codes` of any tokens: the code of a token is its place in the stream where first seen."""
    first: dict[str, int] = {}
    place = itertools.count()
    codes, lengths = array("q"), array("q")
    for s in sentences:
        before = len(codes)
        codes.extend(map(first.setdefault, s, place))
        lengths.append(len(codes) - before)
    token = {code: t for t, code in first.items()}
    return np.frombuffer(codes, dtype=np.int64), np.frombuffer(lengths, dtype=np.int64), token.__getitem__


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
    """code -> id in `index` (`<unk>` outside it), for codes below `size`; int32 like the stream."""
    lookup = np.full(size, UNK, dtype=np.int32)
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


def encode(sentences: Iterable[Sequence[str]], index: dict[str, int]) -> list[np.ndarray]:
    """Each sentence as ids of the vocabulary `index` (`<unk>` outside it), as `NGramLM.ids` gives them."""
    codes, lengths, token = token_codes(sentences)
    if not len(lengths):
        return []
    frequency, seen, names = _distinct(codes, token)
    ids = _lookup(len(frequency), seen, names, index)[codes]
    return np.split(ids, np.cumsum(lengths)[:-1])
