"""Skip-gram with negative sampling (word2vec's SGNS), trained by plain SGD on batches of pairs.

For every kept token (after subsampling) a window radius is drawn uniformly from 1..window, and each word
within that radius in the same sentence is a context of it (word2vec's dynamic window, which weights near
words more). A (center, context) pair pulls the center's input vector and the context's output vector
together and pushes `negative` noise words' output vectors away; the loss is
-log σ(u_ctx·v) - Σ log σ(-u_neg·v). The gradients are written by hand and scattered with `index_add_`, so
a batch costs two gathers, a few elementwise products and two scatters. The learning rate falls linearly from
`alpha` to `alpha * 1e-4` over all words of all epochs, as in word2vec. One seed fixes subsampling,
windows, pair order, negatives and the initial vectors, so a run is repeatable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import TinyLMError
from .vocab import Encoded

CHUNK_TOKENS = 100_000
"""Tokens whose pairs are generated and shuffled together; bounds memory on a corpus of any size."""


MAX_BATCH_PER_WORD = 4
"""A batch holds at most this many pairs per vocabulary word. A batch's updates to one word are summed, which
matches word2vec's one-by-one updates only while a word recurs a few times in it; on a tiny vocabulary a
full batch would step each vector by hundreds of summed gradients at once and the vectors collapse."""


@dataclass(frozen=True)
class SGNSConfig:
    """Training settings, named as in word2vec and gensim."""

    dim: int = 100
    window: int = 5
    negative: int = 5
    epochs: int = 5
    sample: float = 1e-3
    alpha: float = 0.025
    batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "window", "negative", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TinyLMError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise TinyLMError(f"alpha must be positive, got {self.alpha}")


@dataclass
class TrainStats:
    """What a run did: per-epoch mean loss per pair, pairs seen, time taken."""

    losses: list[float] = field(default_factory=list)
    pairs: int = 0
    seconds: float = 0.0
    words: int = 0  # raw words read over all epochs

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds else 0.0


def chunks(sentence: np.ndarray, size: int) -> list[tuple[int, int]]:
    """[start, end) spans of about `size` tokens that end on sentence boundaries."""
    starts = np.flatnonzero(np.diff(sentence)) + 1
    spans, begin = [], 0
    while begin < len(sentence):
        k = np.searchsorted(starts, begin + size)
        end = int(starts[k]) if k < len(starts) else len(sentence)
        spans.append((begin, end))
        begin = end
    return spans


def window_pairs(
    sentence: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every (center, context) pair under dynamic windows, never across a sentence."""
    n = len(sentence)
    reach = rng.integers(1, window + 1, size=n)
    centers, contexts = [], []
    for offset in range(1, min(window, n - 1) + 1):
        left = np.arange(n - offset)
        same = sentence[:-offset] == sentence[offset:]
        forward = same & (reach[:-offset] >= offset)  # center left, context `offset` to its right
        backward = same & (reach[offset:] >= offset)  # center right, context `offset` to its left
        centers += [left[forward], left[backward] + offset]
        contexts += [left[forward] + offset, left[backward]]
    if not centers:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(centers), np.concatenate(contexts)


def sgd_step(
    w_in: torch.Tensor, w_out: torch.Tensor, centers: torch.Tensor, targets: torch.Tensor, lr: float
) -> float:
    """One SGD step on a batch; `targets` (B, 1 + negative) holds each pair's context, then its negatives.
    A negative that happens to be the context is ignored. Returns the summed loss of the batch.

    Products are elementwise sums rather than batched matmuls: with rows of 1 + negative they are faster."""
    flat = targets.reshape(-1)
    v = w_in.index_select(0, centers)  # (B, d)
    u = w_out.index_select(0, flat).view(*targets.shape, -1)  # (B, 1 + negative, d)
    scores = (u * v.unsqueeze(1)).sum(-1)
    label = torch.zeros_like(scores)
    label[:, 0] = 1
    weight = torch.ones_like(scores)
    weight[:, 1:] = targets[:, 1:] != targets[:, :1]
    grad = (label - torch.sigmoid(scores)) * weight * lr  # ascent direction of the log-likelihood
    w_in.index_add_(0, centers, (grad.unsqueeze(2) * u).sum(1))
    w_out.index_add_(0, flat, (grad.unsqueeze(2) * v.unsqueeze(1)).view(-1, v.shape[1]))
    signed = torch.where(label.bool(), scores, -scores)
    return float(-(F.logsigmoid(signed) * weight).sum())


def train_sgns(corpus: Encoded, config: SGNSConfig, progress: bool = True) -> tuple[np.ndarray, TrainStats]:
    """Input vectors (vocab size, dim) learnt on `corpus`, and the run's stats."""
    rng = np.random.default_rng(config.seed)
    size, dim = len(corpus.vocab.words), config.dim
    w_in = torch.from_numpy(((rng.random((size, dim)) - 0.5) / dim).astype(np.float32))
    w_out = torch.zeros(size, dim)
    keep = corpus.vocab.keep_probabilities(config.sample)
    cdf = corpus.vocab.noise_cdf()
    total = config.epochs * corpus.raw_tokens
    scale = corpus.raw_tokens / len(corpus.ids)  # raw words each kept token stands for, for lr and progress
    stats, done, start = TrainStats(words=total), 0.0, time.perf_counter()
    spans, lr = chunks(corpus.sentence, CHUNK_TOKENS), config.alpha
    batch_size = min(config.batch_size, MAX_BATCH_PER_WORD * size)
    with tqdm(total=total, unit=" words", unit_scale=True, desc="sgns", disable=not progress) as bar:
        for _ in range(config.epochs):
            loss, pairs = 0.0, 0
            for begin, end in spans:
                ids, sentence = corpus.ids[begin:end], corpus.sentence[begin:end]
                kept = rng.random(len(ids)) < keep[ids]
                ids, (centers, contexts) = ids[kept], window_pairs(sentence[kept], config.window, rng)
                order = rng.permutation(len(centers))
                centers, contexts = ids[centers[order]], ids[contexts[order]]
                noise = np.searchsorted(cdf, rng.random((len(centers), config.negative)), side="right")
                targets = torch.from_numpy(
                    np.concatenate([contexts[:, None], noise], axis=1).astype(np.int64)
                )
                centers_t = torch.from_numpy(centers.astype(np.int64))
                words = (end - begin) * scale
                batches = range(0, len(centers), batch_size)
                for k, b in enumerate(batches):
                    at = done + words * k / max(len(batches), 1)
                    lr = config.alpha * max(1 - at / total, 1e-4)
                    sl = slice(b, b + batch_size)
                    loss += sgd_step(w_in, w_out, centers_t[sl], targets[sl], lr)
                pairs += len(centers)
                done += words
                bar.update(round(done) - bar.n)
                bar.set_postfix(loss=f"{loss / max(pairs, 1):.3f}", lr=f"{lr:.5f}", refresh=False)
            stats.losses.append(loss / max(pairs, 1))
            stats.pairs += pairs
    stats.seconds = time.perf_counter() - start
    return w_in.numpy(), stats
