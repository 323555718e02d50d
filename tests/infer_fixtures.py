"""A tiny random checkpoint (real tinylm tokenizer + TinyLM) shared by the engine and server tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinylm.data.bpe import train_tokenizer
from tinylm.infer.engine import Engine
from tinylm.models import ModelConfig, build_model
from tinylm.models.checkpoint import save_model

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
    "The quick brown fox jumps over the lazy dog. 0123456789\n"
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded machine idle-spinning threads slow them badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_checkpoint(root: Path, max_seq_len: int = 256, seed: int = 0) -> Path:
    """Train a 300-token byte-level BPE and save a random 2-layer model beside it in `root/ckpt`."""
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT * 30, encoding="utf-8")
    tok = train_tokenizer(str(corpus), str(root / "tok"), vocab_size=300, min_frequency=2)
    torch.manual_seed(seed)
    # A large init spreads the logits, so greedy choices are not near-ties that float noise could flip.
    config = ModelConfig(
        vocab_size=tok.vocab_size,
        d_model=64,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        d_ff=128,
        max_seq_len=max_seq_len,
        init_std=0.2,
    )
    return save_model(build_model(config), root / "ckpt", root / "tok")


def make_engine(root: Path, **kw) -> Engine:
    return Engine.load(make_checkpoint(root), **kw)
