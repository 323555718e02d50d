"""Bits per byte: the formula, full coverage of the split, and the inputs it refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinylm.data.bpe import train_tokenizer
from tinylm.data.shards import TokenShards
from tinylm.errors import TinyLMError
from tinylm.eval.bpb import eval_bpb, shards_bpb, split_nll
from tinylm.models import Backbone, ModelConfig, build_model
from tinylm.models.checkpoint import save_model


def uniform_model(vocab_size: int, max_seq_len: int = 16) -> Backbone:
    """All weights zero: the logits are exactly zero, so every token costs ln(vocab_size) nats."""
    model = build_model(
        ModelConfig(vocab_size=vocab_size, d_model=16, n_layer=1, n_head=2, max_seq_len=max_seq_len)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


@pytest.mark.parametrize(
    ("length", "context", "batch_size"), [(100, 16, 3), (33, 16, 8), (17, 16, 1), (2, 16, 4)]
)
def test_every_token_but_the_first_is_scored_once(length, context, batch_size):
    tokens = np.arange(length, dtype=np.uint16) % 50
    nll, count = split_nll(uniform_model(50), tokens, context, batch_size)
    assert count == length - 1
    assert nll == pytest.approx((length - 1) * math.log(50), rel=1e-5)


def test_bpb_is_nats_over_ln2_bytes(tiny_shards_dir):
    shards = TokenShards.open(tiny_shards_dir)
    split = shards.manifest["splits"]["val"]
    result = shards_bpb(uniform_model(shards.manifest["vocab_size"]), shards, "val", context=16, batch_size=8)
    expected = (
        (split["tokens"] - 1) * math.log(shards.manifest["vocab_size"]) / (math.log(2) * split["bytes"])
    )
    assert result["bpb"] == pytest.approx(expected, rel=1e-5)
    assert result["tokens"] == split["tokens"] - 1 and result["bytes"] == split["bytes"]


def test_context_longer_than_the_model_is_refused(tiny_shards_dir):
    shards = TokenShards.open(tiny_shards_dir)
    with pytest.raises(
        TinyLMError, match=r"context 32 is longer than the model supports \(model.max_seq_len=16\)"
    ):
        shards_bpb(uniform_model(shards.manifest["vocab_size"]), shards, context=32)


def test_shards_of_another_tokenizer_are_refused(tiny_corpus_dir, tiny_shards_dir, tmp_path):
    other = tmp_path / "other"
    tok = train_tokenizer(str(tiny_corpus_dir), str(other), vocab_size=400)
    save_model(uniform_model(tok.vocab_size), tmp_path / "model", other)
    with pytest.raises(TinyLMError, match="another tokenizer"):
        eval_bpb(str(tmp_path / "model"), str(tiny_shards_dir))
