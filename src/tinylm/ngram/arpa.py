"""ARPA files: the standard text form of a back-off n-gram model (KenLM, SRILM), written and read.

    \\data\\
    ngram 1=V
    ngram 2=N2
    \\1-grams:
    log10 p(w)  w  log10 bow(w)
    \\2-grams:
    log10 p(w2 | w1)  w1 w2  log10 bow(w1 w2)
    ...
    \\end\\

Probabilities of the listed n-grams are final (interpolated already); an unseen n-gram backs off. Every
n-gram below the top order is written with its backoff weight, and `<s>` with log10 p = -99 (never
predicted). ARPA separates tokens by whitespace, so a token holding whitespace (a character model's space
or newline) is written with each such character as `<U+XXXX>` and read back the same way.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from ..data.jsonl import warn
from ..errors import TinyLMError
from ..io import atomic_file
from .model import SPECIALS, NGramLM, check_order

LN10 = math.log(10)
NEVER = -99.0
"""log10 p written for `<s>`, as lmplz writes it."""
_ESCAPED = re.compile(r"<U\+([0-9A-F]{4,6})>")
_SPACE = re.compile(r"\s")


def escape(token: str) -> str:
    """`token` with every whitespace character as `<U+XXXX>`, so that ARPA can hold it."""
    if _ESCAPED.search(token):
        raise TinyLMError(f"token {token!r} looks like an ARPA escape (<U+XXXX>); it cannot be exported")
    return _SPACE.sub(lambda m: f"<U+{ord(m.group()):04X}>", token)


def unescape(token: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), token)


def ngram_tokens(lm: NGramLM, k: int) -> np.ndarray:
    """(n_k, k) array of the vocabulary ids of each k-gram, in table order."""
    ids = np.arange(lm.vocab_size, dtype=np.int64)[:, None]
    for j in range(2, k + 1):
        keys = lm.keys[j - 1]
        ids = np.concatenate([ids[keys // lm.vocab_size], (keys % lm.vocab_size)[:, None]], axis=1)
    return ids


def _log10(x: float) -> str:
    return f"{x / LN10:.8g}" if math.isfinite(x) else f"{NEVER:g}"


def write_arpa(lm: NGramLM, path: str | os.PathLike) -> Path:
    """Write `lm` as an ARPA file (atomically); `kenlm.Model(path)` loads it.

    KenLM reads no model below order 2, so an order-1 model is written as order 2 with no 2-grams and
    every unigram's backoff 0, which leaves every probability as it is.
    """
    words = [escape(t) for t in lm.vocab]
    order = max(lm.order, 2)
    logbow = lm.logbow if lm.order > 1 else [np.zeros(lm.vocab_size)]
    path = Path(path)
    with atomic_file(path) as f:
        f.write("\\data\\\n")
        for k in range(1, order + 1):
            f.write(f"ngram {k}={len(lm.logp[k - 1]) if k <= lm.order else 0}\n")
        for k in range(1, order + 1):
            f.write(f"\n\\{k}-grams:\n")
            if k <= lm.order:
                bows = logbow[k - 1] if k < order else None
                for i, row in enumerate(ngram_tokens(lm, k).tolist()):
                    text = " ".join(words[t] for t in row)
                    bow = f"\t{_log10(bows[i])}" if bows is not None else ""
                    f.write(f"{_log10(lm.logp[k - 1][i])}\t{text}{bow}\n")
        f.write("\n\\end\\\n")
    return path


class _Lines:
    """The file's lines with their numbers, for errors that name file:line."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise TinyLMError(f"{path}: not UTF-8 text ({e})") from None
        self.i = 0

    def error(self, message: str, line: int | None = None) -> TinyLMError:
        return TinyLMError(f"{self.path}:{self.i if line is None else line}: {message}")

    def next(self) -> str | None:
        """The next non-blank line, stripped, or None at the end."""
        while self.i < len(self.lines):
            self.i += 1
            line = self.lines[self.i - 1].strip()
            if line:
                return line
        return None


def _header(src: _Lines) -> list[tuple[int, int]]:
    """(count, line) of each order from the \\data\\ section."""
    line = src.next()
    while line is not None and line != "\\data\\":
        line = src.next()  # text before \data\ is a comment
    if line is None:
        raise TinyLMError(f"{src.path}: not an ARPA file (no \\data\\ line)")
    counts = []
    while (line := src.next()) is not None and line.startswith("ngram "):
        m = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\d+)", line)
        if not m or int(m.group(1)) != len(counts) + 1:
            raise src.error(f"expected 'ngram {len(counts) + 1}=COUNT', got {line!r}")
        counts.append((int(m.group(2)), src.i))
    if not counts:
        raise src.error("the \\data\\ section lists no 'ngram K=COUNT' line")
    check_order(len(counts))
    src.i -= 1  # give the section header back
    return counts


def _section(src: _Lines, k: int, count: int, at: int, top: bool):
    """(tokens, log10 p, log10 bow or nan, line number) of the `count` lines of the k-grams section."""
    line = src.next()
    if line != f"\\{k}-grams:":
        raise src.error(f"expected the section header \\{k}-grams:, got {line!r}")
    tokens, logp, bow, where = [], [], [], []
    while (line := src.next()) is not None and not line.startswith("\\"):
        fields = line.split()
        if len(fields) not in (k + 1, k + 2) or (top and len(fields) == k + 2):
            expected = f"log10 p, {k} tokens" + ("" if top else " and an optional backoff")
            raise src.error(f"expected {expected}, got {len(fields)} fields: {line!r}")
        try:
            logp.append(float(fields[0]))
            bow.append(float(fields[k + 1]) if len(fields) == k + 2 else math.nan)
        except ValueError:
            raise src.error(f"not a number in {line!r}") from None
        tokens.append([unescape(t) for t in fields[1 : k + 1]])
        where.append(src.i)
    if line is not None:
        src.i -= 1
    if len(tokens) != count:
        raise src.error(
            f"the header says ngram {k}={count} but the \\{k}-grams: section holds {len(tokens)}", at
        )
    return tokens, np.array(logp), np.array(bow), np.array(where, dtype=np.int64)


def read_arpa(path: str | os.PathLike) -> NGramLM:
    """Load an ARPA file as an NGramLM; a malformed file raises TinyLMError naming file:line."""
    src = _Lines(Path(path))
    counts = _header(src)
    order = len(counts)
    sections = [_section(src, k, n, at, k == order) for k, (n, at) in enumerate(counts, start=1)]
    if src.next() != "\\end\\":
        raise src.error("expected \\end\\ after the last section")
    unigrams, p1, b1, lines1 = sections[0]
    words = [t[0] for t in unigrams]
    missing = [t for t in SPECIALS[1:] if t not in words]
    if missing:
        raise TinyLMError(f"{path}: the 1-grams hold no {' or '.join(missing)}")
    if "<unk>" not in words:
        warn(f"{path}: no <unk> among the 1-grams; giving it log10 p = -100 as KenLM does")
        unigrams, words = [*unigrams, ["<unk>"]], [*words, "<unk>"]
        p1, b1, lines1 = np.append(p1, -100.0), np.append(b1, 0.0), np.append(lines1, 0)
    vocab = [*SPECIALS, *(w for w in words if w not in SPECIALS)]
    if len(set(words)) != len(words):
        raise TinyLMError(f"{path}: a 1-gram is listed twice")
    index = {w: i for i, w in enumerate(vocab)}
    V = len(vocab)
    place = np.array([index[w] for w in words])
    keys, logp, logbow, lines = [np.arange(V, dtype=np.int64)], [], [], []
    for k, (tokens, p, b, where) in enumerate(sections, start=1):
        if k == 1:
            p, b, where = p1, b1, lines1
            order_ix = np.argsort(place)
        else:
            ids = np.array([[index.get(t, -1) for t in row] for row in tokens], dtype=np.int64).reshape(-1, k)
            bad = np.flatnonzero((ids < 0).any(axis=1))
            if len(bad):
                raise src.error(
                    f"a token of {' '.join(tokens[bad[0]])!r} is not among the 1-grams", where[bad[0]]
                )
            prefix = ids[:, 0]
            for j in range(2, k):
                prefix = _lookup(keys[j - 1], prefix * V + ids[:, j - 1])
            absent = np.flatnonzero(prefix < 0)
            if len(absent):
                row = tokens[absent[0]]
                raise src.error(
                    f"the context {' '.join(row[:-1])!r} of {' '.join(row)!r} is not among the {k - 1}-grams",
                    where[absent[0]],
                )
            context_bows = logbow[k - 2][prefix]
            lost = np.flatnonzero(np.isnan(context_bows))
            if len(lost):
                row, i = tokens[lost[0]], prefix[lost[0]]
                raise src.error(
                    f"{' '.join(row[:-1])!r} has no backoff weight, but it is the context of {' '.join(row)!r} "
                    f"(line {where[lost[0]]})",
                    int(lines[k - 2][i]),
                )
            key = prefix * V + ids[:, -1]
            order_ix = np.argsort(key, kind="stable")
            if len(key) and (np.diff(key[order_ix]) == 0).any():
                twice = order_ix[np.flatnonzero(np.diff(key[order_ix]) == 0)[0] + 1]
                raise src.error(f"{' '.join(tokens[twice])!r} is listed twice", where[twice])
            keys.append(key[order_ix])
        logp.append(p[order_ix] * LN10)
        lines.append(where[order_ix])
        if k < order:
            logbow.append(b[order_ix] * LN10)
    for k in range(order - 1):
        logbow[k] = np.nan_to_num(logbow[k], nan=0.0)  # only n-grams that are nobody's context lack one
    return NGramLM(vocab, keys, logp, logbow, {"method": "arpa", "source": str(path)})


def _lookup(table: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of each key in the sorted table, -1 where absent."""
    i = np.minimum(table.searchsorted(key), max(len(table) - 1, 0))
    return np.where((len(table) > 0) & (table[i] == key), i, -1) if len(table) else np.full(len(key), -1)
