"""The two standard checks of word vectors: WordSim-353 (Spearman correlation of cosine similarity with
human judgements of word pairs) and the Google analogies (accuracy of 3CosAdd on "a b c d" questions).

The rules are gensim's `evaluate_word_pairs` / `evaluate_word_analogies`, so scores compare with gensim's
(a test checks they match): words are matched case-insensitively among the `limit` most frequent (the
first rows); a pair or question with a missing word is skipped and reported as lost coverage; an analogy
is answered by the best of the top five candidates that is not a query word. The files are read from paths;
gensim's test data ships both, and `reference_file` finds them there without importing gensim.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TinyLMError
from .keyed import WordVectors, fold

LIMIT = 300_000
"""gensim's `restrict_vocab`: only the most frequent words take part."""


def reference_file(name: str) -> Path | None:
    """`name` ("wordsim353.tsv", "questions-words.txt") in an installed gensim's test data, if any."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "test" / "test_data" / name
    return path if path.is_file() else None


def _lines(path: str | Path) -> list[tuple[str, str]]:
    """(file:line, text) of the non-blank lines of a test file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TinyLMError(f"cannot read {path}: {e.strerror}") from None
    return [(f"{path}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """(word, word, human score) rows of a tab-separated file; lines starting with # are comments."""
    rows = []
    for where, line in _lines(path):
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            a, b, score = parts
            rows.append((a, b, float(score)))
        except ValueError:
            raise TinyLMError(f"{where}: expected 'word<TAB>word<TAB>score', got {line!r}") from None
    return rows


def read_analogies(path: str | Path) -> list[tuple[str, list[str]]]:
    """(section, [a, b, c, d]) questions of a file in word2vec's format: ": section" lines, then "a b c d"."""
    section, rows = "", []
    for where, line in _lines(path):
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if len(words) != 4:
            raise TinyLMError(f"{where}: expected four words 'a b c d', got {line!r}")
        rows.append((section, words))
    return rows


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks, ties given their mean rank."""

    def ranks(v: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        upper = np.cumsum(counts)
        return ((upper - (counts - 1) / 2)[inverse]).astype(np.float64)

    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom else float("nan")


def _rows(vectors: WordVectors, limit: int) -> dict[str, int]:
    """Folded word -> row among the first `limit` rows, the first such word winning."""
    out: dict[str, int] = {}
    for i, w in enumerate(vectors.words[:limit]):
        out.setdefault(fold(w), i)
    return out


@dataclass(frozen=True)
class PairScore:
    spearman: float
    used: int
    total: int


def word_pairs(vectors: WordVectors, path: str | Path, limit: int = LIMIT) -> PairScore:
    """Spearman correlation between the pairs' cosine similarities and their human scores."""
    rows, found = read_pairs(path), _rows(vectors, limit)
    model, human = [], []
    for a, b, score in rows:
        i, j = found.get(fold(a)), found.get(fold(b))
        if i is not None and j is not None:
            model.append(float(vectors.unit[i] @ vectors.unit[j]))
            human.append(score)
    rho = spearman(np.array(model), np.array(human)) if len(model) > 1 else float("nan")
    return PairScore(rho, len(model), len(rows))


@dataclass(frozen=True)
class AnalogyScore:
    correct: int
    used: int
    total: int
    sections: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Section name -> (correct, questions answered)."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.used if self.used else float("nan")


def analogies(vectors: WordVectors, path: str | Path, limit: int = LIMIT, batch: int = 512) -> AnalogyScore:
    """Accuracy of 3CosAdd on the questions whose four words are all known."""
    rows, found = read_analogies(path), _rows(vectors, limit)
    asked = [(s, [found[fold(w)] for w in q]) for s, q in rows if all(fold(w) in found for w in q)]
    unit = vectors.unit[:limit]
    group = np.array([found[fold(w)] for w in vectors.words[: len(unit)]])  # each row's folded form's row
    sections: dict[str, list[int]] = {}
    for start in range(0, len(asked), batch):
        part = asked[start : start + batch]
        q = np.array([r for _, r in part])  # (n, 4): a, b, c, expected
        scores = (unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]) @ unit.T
        np.put_along_axis(scores, q[:, :3], -np.inf, axis=1)
        top = np.argpartition(-scores, 5, axis=1)[:, :5] if unit.shape[0] > 5 else np.argsort(-scores, axis=1)
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)
        for (section, _), row, candidates in zip(part, q, top, strict=True):
            answer = next((c for c in candidates if group[c] not in row[:3]), candidates[-1])
            tally = sections.setdefault(section, [0, 0])
            tally[0] += int(group[answer] == row[3])
            tally[1] += 1
    correct = sum(c for c, _ in sections.values())
    return AnalogyScore(correct, len(asked), len(rows), {s: (c, n) for s, (c, n) in sections.items()})
