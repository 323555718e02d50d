"""Held-out scores of an n-gram model: perplexity per token and bits per byte, as neural models get them."""

from __future__ import annotations

import math

import numpy as np

from ..eval.bits import bits_per_byte
from .counts import UNK, sentence_stream
from .model import NGramLM


def heldout_scores(lm: NGramLM, sentences: list[np.ndarray], n_bytes: int) -> dict[str, float]:
    """Perplexity and bits per byte over every token of `sentences` and each one's `</s>`.

    Every sentence starts from `<s>`; its first token is predicted too (a neural model's split score
    leaves out only the split's very first token).
    """
    stream = sentence_stream(sentences)
    logp = lm.score_stream(stream)
    nats = -float(logp.sum())
    tokens = len(stream) - len(sentences)  # each sentence's tokens and its </s>
    unknown = int((stream == UNK).sum())
    return {
        "bpb": bits_per_byte(nats, n_bytes),
        "perplexity": math.exp(nats / tokens),
        "nll_per_token": nats / tokens,
        "tokens": tokens,
        "bytes": n_bytes,
        "oov_rate": unknown / tokens,
    }
