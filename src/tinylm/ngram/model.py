"""NGramLM: a back-off n-gram language model held as sorted arrays, scored, sampled, saved and loaded.

The model is what an ARPA file holds: for each order k, the seen k-grams (sorted keys, see `counts`),
the natural log of each one's probability (interpolated already) and, below the top order, each one's
backoff weight as a context. p(w | h) is that of the longest `s w` found, s a suffix of h, times the
backoff weights of the longer suffixes of h that exist. A model directory holds `ngram.json` (order,
method, unit, discounts, ...), `vocab.json` (the tokens by id) and `arrays.npz`; no pickle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TinyLMError
from ..io import atomic_dir, atomic_file, read_json, write_json
from ..tokenizer import Tokenizer
from .counts import UNK, distance_from_bos, sentence_stream

SPECIALS = ("<unk>", "<s>", "</s>")
"""Ids 0, 1, 2 of every vocabulary (counts.UNK, BOS, EOS)."""
MAX_ORDER = 5
FORMAT = "tinylm-ngram-1"
TOKENIZER_DIR = "tokenizer"
"""Where a model of a tokenizer's tokens keeps that tokenizer, inside the model directory."""
_CACHE_SIZE = 1 << 18


def check_order(order: int) -> None:
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise TinyLMError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")


class NGramLM:
    """A back-off n-gram model over a vocabulary of strings; `logprob` and `score` are natural logs."""

    def __init__(
        self,
        vocab: list[str],
        keys: list[np.ndarray],
        logp: list[np.ndarray],
        logbow: list[np.ndarray],
        config: dict[str, Any],
    ):
        if list(vocab[:3]) != list(SPECIALS):
            raise TinyLMError(f"an n-gram vocabulary must start with {', '.join(SPECIALS)}")
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.order = len(logp)
        check_order(self.order)
        self.keys, self.logp, self.logbow = keys, logp, logbow
        self.config = dict(config)
        self._contexts: dict[tuple[int, ...], list[tuple[int, int, float]]] = {}
        self._answers: dict[tuple[int, tuple[int, ...]], float] = {}  # (token, context) -> logprob

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def method(self) -> str:
        return self.config.get("method", "arpa")

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """Vocabulary ids, `<unk>` for tokens outside the vocabulary."""
        get = self.index.get
        return [get(t, UNK) for t in tokens]

    def _find(self, ids: Sequence[int]) -> int:
        """Id of the n-gram `ids` in its order's table, or -1 if it was never seen."""
        found = ids[0]
        for k in range(1, len(ids)):
            table, key = self.keys[k], found * self.vocab_size + ids[k]
            i = int(table.searchsorted(key))
            if i == len(table) or table[i] != key:
                return -1
            found = i
        return found

    def _context(self, context: tuple[int, ...]) -> list[tuple[int, int, float]]:
        """(length j, id, summed backoff of the longer suffixes) of each suffix of the context, longest first.

        j runs from the context length down to 0 (the empty context); a suffix that was never seen keeps id
        -1 and adds no backoff weight.
        """
        state = self._contexts.get(context)
        if state is None:
            if len(self._contexts) >= _CACHE_SIZE:
                self._contexts.clear()
            m, acc, state = len(context), 0.0, []
            for j in range(m, 0, -1):
                found = self._find(context[m - j :])
                state.append((j, found, acc))
                if found >= 0:
                    acc += float(self.logbow[j - 1][found])
            state.append((0, 0, acc))
            self._contexts[context] = state
        return state

    def _context_ids(self, context: Sequence[str]) -> tuple[int, ...]:
        """The ids of the last order-1 tokens of `context`, never reaching back past a `<s>`."""
        context = list(context[len(context) - self.order + 1 :] if len(context) >= self.order else context)
        if self.order == 1:
            return ()
        if "<s>" in context:
            context = context[len(context) - 1 - context[::-1].index("<s>") :]
        return tuple(self.ids(context))

    def logprob(self, token: str, context: Sequence[str] = ()) -> float:
        """ln P(token | context), from the last order-1 tokens of `context` (which may start with `<s>`)."""
        ids = self._context_ids(context)
        w = self.index.get(token, UNK)
        answer = self._answers.get((w, ids))
        if answer is None:
            if len(self._answers) >= _CACHE_SIZE:
                self._answers.clear()
            answer = self._answers[w, ids] = self._logprob(w, self._context(ids))
        return answer

    def _logprob(self, w: int, state: list[tuple[int, int, float]]) -> float:
        V = self.vocab_size
        for j, found, acc in state:
            if j == 0:
                return float(self.logp[0][w]) + acc
            if found < 0:
                continue
            table, key = self.keys[j], found * V + w
            i = int(table.searchsorted(key))
            if i < len(table) and table[i] == key:
                return float(self.logp[j][i]) + acc
        raise AssertionError("unreachable: the empty context always answers")

    def distribution(self, context: Sequence[str] = ()) -> np.ndarray:
        """ln P(w | context) for every vocabulary id w (`<s>` is -inf: it is never predicted)."""
        ids = self._context_ids(context)
        out = self.logp[0].copy()
        V = self.vocab_size
        for j in range(1, len(ids) + 1):
            found = self._find(ids[len(ids) - j :])
            if found < 0:
                continue
            out += self.logbow[j - 1][found]
            lo, hi = self.keys[j].searchsorted([found * V, (found + 1) * V])
            out[self.keys[j][lo:hi] - found * V] = self.logp[j][lo:hi]
        return out

    def score_stream(self, stream: np.ndarray) -> np.ndarray:
        """ln P of every token of a `<s> ... </s>` id stream (see counts.sentence_stream) given its history;
        0 at each `<s>`. Vectorised over the whole stream, so a held-out split scores in seconds."""
        dist = distance_from_bos(stream)
        V, n = self.vocab_size, len(stream)
        best = self.logp[0][stream].copy()
        backoff = np.zeros(n)  # summed backoffs of the contexts longer than the longest n-gram found so far
        ids = stream.astype(np.int64)  # id of the (k-1)-gram ending at each position, -1 where none
        for k in range(2, self.order + 1):
            at = np.flatnonzero(dist >= k - 1)
            at = at[ids[at - 1] >= 0]
            backoff[at] += self.logbow[k - 2][ids[at - 1]]
            key = ids[at - 1] * V + stream[at]
            table = self.keys[k - 1]
            if len(table) == 0:
                break
            i = np.minimum(table.searchsorted(key), len(table) - 1)
            hit = table[i] == key
            best[at[hit]] = self.logp[k - 1][i[hit]]
            backoff[at[hit]] = 0.0  # found at order k: the shorter contexts' backoffs do not apply
            ids = np.full(n, -1, dtype=np.int64)
            ids[at[hit]] = i[hit]
        out = best + backoff
        out[dist == 0] = 0.0
        return out

    def score(self, tokens: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Sum of ln P of each token (and of `</s>` with eos) given the ones before (and `<s>` with bos)."""
        ids = self.ids(tokens)
        if bos:
            stream = sentence_stream([np.asarray(ids, dtype=np.int64)])
            return float(self.score_stream(stream if eos else stream[:-1]).sum())
        context: list[str] = []
        total = 0.0
        for t in [*tokens, *(["</s>"] if eos else [])]:
            total += self.logprob(t, context)
            context.append(t)
        return total

    def save(self, path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> None:
        """Write the model directory (ngram.json, vocab.json, arrays.npz, and the tokenizer of a model of
        its tokens in tokenizer/) atomically."""
        arrays = {f"logp_{k + 1}": a for k, a in enumerate(self.logp)}
        arrays |= {f"logbow_{k + 1}": a for k, a in enumerate(self.logbow)}
        arrays |= {f"keys_{k + 1}": a for k, a in enumerate(self.keys) if k > 0}
        with atomic_dir(path) as tmp:
            write_json(tmp / "ngram.json", {"format": FORMAT, "order": self.order, **self.config})
            write_json(tmp / "vocab.json", self.vocab)
            with atomic_file(tmp / "arrays.npz", "wb") as f:
                np.savez(f, **arrays)
            if tokenizer is not None:
                tokenizer.save(tmp / TOKENIZER_DIR)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NGramLM:
        """Load a model directory written by `save` (`arpa.read_arpa` reads ARPA files)."""
        path = Path(path)
        if not (path / "ngram.json").is_file():
            raise TinyLMError(
                f"{path}: not an n-gram model (no ngram.json here; train one with `tinylm ngram train`)"
            )
        config = read_json(path / "ngram.json")
        if config.pop("format", None) != FORMAT:
            raise TinyLMError(f"{path / 'ngram.json'}: unknown format; expected {FORMAT!r}")
        order = config.pop("order")
        check_order(order)
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as z:
                logp = [z[f"logp_{k}"] for k in range(1, order + 1)]
                logbow = [z[f"logbow_{k}"] for k in range(1, order)]
                keys = [np.arange(len(logp[0]), dtype=np.int64)] + [
                    z[f"keys_{k}"] for k in range(2, order + 1)
                ]
        except (KeyError, ValueError, OSError) as e:
            raise TinyLMError(f"{path / 'arrays.npz'}: unreadable n-gram arrays ({e})") from None
        vocab = read_json(path / "vocab.json")
        if len(vocab) != len(logp[0]):
            raise TinyLMError(
                f"{path}: vocab.json has {len(vocab)} tokens but the unigram table {len(logp[0])}"
            )
        return cls(vocab, keys, logp, logbow, config)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{len(p):,}" for p in self.logp)
        return f"NGramLM(order={self.order}, method={self.method!r}, vocab={self.vocab_size:,}, ngrams=[{sizes}])"
