"""The character n-gram model the IME decodes with: one saved by `tinylm ngram train`, or by default one
built once from the embedded Chinese corpora and cached.

Training sentences are clauses: runs of Chinese characters between punctuation, so "<s>" and "</s>" mark
where a typed phrase usually begins and ends. The cache entry is keyed by the corpus names, a digest of
their files and the order, so another corpus or order builds a new model; it is written atomically.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..data.readers import read_documents, resolve_source
from ..errors import TinyLMError
from ..ngram import NGramLM, train_ngram

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
"""A run of CJK ideographs (basic block, extension A, compatibility): what pinyin can be written as."""
DEFAULT_CORPORA = ("tang", "tang300")
"""The embedded Chinese corpora: all Tang poems, and Tang-300 (whose editions differ in places, 床前明月光)."""


def clauses(texts: Iterable[str]) -> Iterator[list[str]]:
    """Every run of Chinese characters in `texts`, as a list of characters."""
    for text in texts:
        for run in HAN.findall(text):
            yield list(run)


def is_chinese(text: str) -> bool:
    """Whether every character of `text` is a Chinese character."""
    return bool(text) and HAN.fullmatch(text) is not None


def cache_root() -> Path:
    """Where tinylm keeps what it builds once: $TINYLM_CACHE, else $XDG_CACHE_HOME/tinylm, else ~/.cache/tinylm."""
    if os.environ.get("TINYLM_CACHE"):
        return Path(os.environ["TINYLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinylm"


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:12]


def default_ngram(corpora: Sequence[str] = DEFAULT_CORPORA, order: int = 3) -> NGramLM:
    """The character n-gram model of the clauses of `corpora` together, trained on first use and cached."""
    names = "+".join(Path(c).name for c in corpora)
    files = [f for c in corpora for f in resolve_source(c)]
    path = cache_root() / "ime" / f"{names}-order{order}-{_digest(files)}"
    if not path.is_dir():  # saved atomically, so a directory there is a whole model
        print(
            f"tinylm: building the {order}-gram character model of {names} (once) in {path}", file=sys.stderr
        )
        texts = (doc for c in corpora for doc in read_documents(c))
        train_ngram(clauses(texts), order=order, config={"unit": "char"}).save(path)
    return NGramLM.load(path)


def load_ngram(ngram: Path | None, corpora: Sequence[str] = DEFAULT_CORPORA, order: int = 3) -> NGramLM:
    """The model saved in `ngram` (of its own order), else the cached `order`-gram model of `corpora`."""
    if ngram is None:
        return default_ngram(corpora, order)
    if not Path(ngram).is_dir():
        raise TinyLMError(
            f"--ngram {ngram}: not a directory (expected a model saved by `tinylm ngram train`)"
        )
    lm = NGramLM.load(ngram)
    if lm.config.get("unit", "char") != "char":
        raise TinyLMError(
            f"--ngram {ngram}: a {lm.config['unit']} model; the IME needs characters (tinylm ngram train --unit char)"
        )
    return lm
