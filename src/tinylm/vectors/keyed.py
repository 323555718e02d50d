"""Word vectors as words plus a matrix: lookups, nearest neighbours, analogies, and their files.

The same object holds vectors trained here and a language model's input embedding table (`from_model`),
so every tool works on both. Similarity is cosine; an analogy "a is to b as c is to ?" is 3CosAdd, the word
closest to b - a + c among unit vectors, the three query words excluded (Mikolov et al., 2013; gensim's
`most_similar(positive=[b, c], negative=[a])`). A word is looked up exactly, else case- and
space-insensitively (a BPE token " King" answers to "king"), the first such word winning.

On disk a vectors directory holds `vectors.safetensors` (one float32 tensor "vectors") and `vocab.json`
(the words in row order and their training counts); loading reads no pickle.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import TinyLMError
from ..io import atomic_dir, read_json, write_json

TENSORS, VOCAB = "vectors.safetensors", "vocab.json"


def fold(word: str) -> str:
    """The form words are matched in when no exact match exists."""
    return word.strip().lower()


class WordVectors:
    """Words and their vectors (one row each, in vocabulary order, most frequent first when trained here)."""

    def __init__(
        self, words: list[str], vectors: np.ndarray, counts: list[int] | None = None, name: str = ""
    ):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise TinyLMError(
                f"{name or 'vectors'}: {len(words)} words but a matrix of shape {vectors.shape}"
            )
        self.words, self.vectors, self.counts, self.name = list(words), vectors, counts, name or "vectors"
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise TinyLMError(f"{self.name}: the word list repeats words")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @functools.cached_property
    def folded(self) -> dict[str, int]:
        """Each folded form's row: the first word that folds to it."""
        out: dict[str, int] = {}
        for i, w in enumerate(self.words):
            out.setdefault(fold(w), i)
        return out

    def lookup(self, word: str) -> int | None:
        """The row of `word`, matched exactly or else folded; None if absent."""
        found = self.index.get(word)
        return self.folded.get(fold(word)) if found is None else found

    def require(self, word: str) -> int:
        """The row of `word`, or a TinyLMError naming near spellings."""
        found = self.lookup(word)
        if found is not None:
            return found
        close = difflib.get_close_matches(fold(word), list(self.folded), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TinyLMError(f"{word!r} is not among the {len(self)} words of {self.name}{hint}")

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self.unit[self.require(a)] @ self.unit[self.require(b)])

    def nearest(
        self, target: np.ndarray, k: int, exclude: set[int] = frozenset(), limit: int | None = None
    ) -> list[tuple[str, float]]:
        """The `k` words (among the first `limit`) most cosine-similar to `target`, rows in `exclude` left out."""
        if k < 1:
            raise TinyLMError(f"k must be a positive integer, got {k}")
        norm = np.linalg.norm(target)
        scores = self.unit[:limit] @ (target / norm if norm > 0 else target)
        excluded = [i for i in exclude if i < len(scores)]
        scores[excluded] = -np.inf
        top = np.argsort(-scores, kind="stable")[: min(k, len(scores) - len(excluded))]
        return [(self.words[i], float(scores[i])) for i in top]

    def neighbours(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The `k` nearest words to `word`, itself excluded."""
        i = self.require(word)
        return self.nearest(self.unit[i], k, {i})

    def analogy(
        self, a: str, b: str, c: str, k: int = 1, limit: int | None = None
    ) -> list[tuple[str, float]]:
        """Words for "a is to b as c is to ?": nearest to b - a + c (3CosAdd), a, b and c excluded."""
        rows = [self.require(w) for w in (a, b, c)]
        target = self.unit[rows[1]] - self.unit[rows[0]] + self.unit[rows[2]]
        return self.nearest(target, k, set(rows), limit)

    def save(self, out: str | os.PathLike, meta: dict | None = None) -> Path:
        """Write the vectors directory atomically; `meta` (how they were made) goes into `training.json`."""
        with atomic_dir(out) as tmp:
            save_file({"vectors": self.vectors}, str(tmp / TENSORS))
            write_json(tmp / VOCAB, {"words": self.words, "counts": self.counts})
            if meta is not None:
                write_json(tmp / "training.json", meta)
        return Path(out)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordVectors:
        """Vectors from a directory written by `save`."""
        path = Path(path)
        vocab = read_json(path / VOCAB)
        if not isinstance(vocab, dict) or not isinstance(vocab.get("words"), list):
            raise TinyLMError(f"{path / VOCAB}: expected an object with a list of words under 'words'")
        tensors = load_file(str(path / TENSORS))
        if "vectors" not in tensors:
            raise TinyLMError(f"{path / TENSORS}: no tensor named 'vectors' (found {', '.join(tensors)})")
        return cls(vocab["words"], tensors["vectors"], vocab.get("counts"), str(path))

    @classmethod
    def from_model(cls, model_dir: str | os.PathLike) -> WordVectors:
        """A language model's input embedding table, one row per token of its tokenizer."""
        from ..models import load_model
        from ..tokenizer import Tokenizer

        table = load_model(model_dir).embed.weight.detach().float().numpy()
        tokenizer = Tokenizer.load(model_dir)
        rows = min(tokenizer.vocab_size, table.shape[0])
        return cls(token_words(tokenizer, rows), table[:rows], name=str(model_dir))


def token_words(tokenizer, rows: int) -> list[str]:
    """A readable, unique name per token id: its decoded text (" the"), else its vocabulary string
    (a byte fragment such as "Ã"), else "<token ID>"."""
    words: list[str] = []
    taken: set[str] = set()
    for i in range(rows):
        text, raw = tokenizer.decode([i]), tokenizer.id_to_token(i)
        for name in (text, raw, f"<token {i}>"):
            if name and "\ufffd" not in name and name not in taken:
                break
        words.append(name)
        taken.add(name)
    return words


def open_vectors(path: str | os.PathLike) -> WordVectors:
    """A vectors directory, or a tinylm / Hugging Face model directory (its input embeddings)."""
    path = Path(path)
    if (path / VOCAB).is_file() and (path / TENSORS).is_file():
        return WordVectors.load(path)
    if (path / "config.json").is_file():
        return WordVectors.from_model(path)
    raise TinyLMError(
        f"{path} is neither a vectors directory ({TENSORS} + {VOCAB}, from `tinylm vectors train`) "
        "nor a model directory (config.json)"
    )
