"""T5's span corruption: random spans of a window (15 % of its tokens, 3 on average) are each replaced by
one sentinel token in the encoder's input, and the decoder learns to write the dropped spans, each after
its sentinel (the T5 paper, 3.1.4; `random_spans_noise_mask` of its code).

Sentinels `<extra_id_0>`, `<extra_id_1>`, ... are special tokens added at the end of the vocabulary, so
the shards' token ids keep their meaning. A batch is a pure function of its index, as the loop requires.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.chat import IGNORE
from ...errors import TinyLMError
from ...models import ModelConfig, model_flops_per_token
from ...tokenizer import Tokenizer
from ..loop import Objective
from .pretraining import PretrainData, Pretraining

NOISE_DENSITY = 0.15
MEAN_SPAN = 3.0


def sentinel_tokens(n: int) -> list[str]:
    return [f"<extra_id_{i}>" for i in range(n)]


def span_counts(length: int, density: float = NOISE_DENSITY, mean_span: float = MEAN_SPAN) -> tuple[int, int]:
    """(noise tokens, noise spans) of a window of `length`, as T5 rounds them (at least one of each)."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def _segments(rng: np.random.Generator, items: int, segments: int) -> np.ndarray:
    """`items` split into `segments` random positive lengths (T5's `_random_segmentation`)."""
    cuts = rng.permutation(np.arange(items - 1) < segments - 1)
    ids = np.concatenate([[0], np.cumsum(cuts)])
    return np.bincount(ids, minlength=segments)


def noise_mask(rng: np.random.Generator, length: int) -> np.ndarray:
    """A boolean mask of `length` with noise spans alternating with kept ones, starting with a kept one."""
    noise, spans = span_counts(length)
    kept = _segments(rng, length - noise, spans)
    dropped = _segments(rng, noise, spans)
    lengths = np.stack([kept, dropped], 1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), lengths)


def corrupt(
    tokens: np.ndarray, mask: np.ndarray, sentinels: list[int], eos: int
) -> tuple[list[int], list[int]]:
    """(inputs, targets): each noise span replaced by its sentinel in the inputs; the targets are the spans,
    each after its sentinel; both end with EOS."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    span = np.cumsum(starts) - 1
    inputs, targets = [], []
    for t, noisy, start, s in zip(tokens.tolist(), mask, starts, span, strict=True):
        if not noisy:
            inputs.append(t)
            continue
        if start:
            inputs.append(sentinels[s])
            targets.append(sentinels[s])
        targets.append(t)
    return inputs + [eos], targets + [eos]


def fitting_length(context: int) -> int:
    """The longest window whose corrupted input (kept tokens, one sentinel per span, EOS) fits `context`
    (about context / 0.9: T5 sizes its windows the same way)."""
    length = max(context - 1, 2)
    while (length + 1) - (n := span_counts(length + 1))[0] + n[1] + 1 <= context:
        length += 1
    return length


def shift_right(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """The decoder's inputs for `labels`: the start token, then the labels (-100 read as `pad`)."""
    inputs = labels.new_full(labels.shape, start)
    inputs[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad)
    return inputs


class SpanWindows:
    """Random windows, corrupted: batch i is a pure function of (seed, i).

    Windows of one length always have the same numbers of noise tokens and spans, so all rows of a batch
    have the same input and target lengths and need no padding.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        context: int,
        batch_size: int,
        seed: int,
        sentinels: list[int],
        eos: int,
        start: int,
    ) -> None:
        self.length = fitting_length(context)
        if len(tokens) < self.length:
            raise TinyLMError(f"a split of {len(tokens)} tokens is too short for windows of {self.length}")
        self.tokens, self.batch_size, self.seed = tokens, batch_size, seed
        self.sentinels, self.eos, self.start = sentinels, eos, start
        if len(sentinels) < span_counts(self.length)[1]:
            raise TinyLMError(f"{len(sentinels)} sentinels are too few for the spans of {self.length} tokens")

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, decoder_input_ids, labels): int64 (B, S), (B, T), (B, T)."""
        rng = np.random.default_rng([self.seed, i])
        starts = rng.integers(0, len(self.tokens) - self.length + 1, size=self.batch_size)
        rows = [
            corrupt(self.tokens[s : s + self.length].astype(np.int64), noise_mask(rng, self.length),
                    self.sentinels, self.eos)
            for s in starts
        ]  # fmt: skip
        inputs, labels = torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
        return inputs, shift_right(labels, self.start, self.eos), labels


def span_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the decoder's targets (positions labelled -100 carry no loss)."""
    inputs, decoder_inputs, labels = batch
    logits = model(inputs, decoder_input_ids=decoder_inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


def add_sentinels(tokenizer: Tokenizer, context: int) -> tuple[Tokenizer, list[int]]:
    """The tokenizer with enough sentinels for a window of `context` (a TinyLMError if one collides with
    an ordinary token), and their ids."""
    names = sentinel_tokens(span_counts(fitting_length(context))[1])
    tokenizer = tokenizer.with_special_tokens(names)
    return tokenizer, [tokenizer.token_to_id(t) for t in names]


def span_pretraining(config: ModelConfig, data: PretrainData) -> Pretraining:
    """Span corruption for an encoder-decoder; scored by the span loss on fixed held-out corruptions."""
    tokenizer, sentinels = add_sentinels(data.tokenizer, data.context)
    config = replace(config, vocab_size=tokenizer.vocab_size, decoder_start_id=tokenizer.pad_id)

    def windows(tokens, context, batch_size, seed):
        return SpanWindows(tokens, context, batch_size, seed, sentinels, tokenizer.eos_id, tokenizer.pad_id)

    def final(model: nn.Module) -> dict[str, float]:
        held_out = windows(data.val, data.context, data.batch_size, data.seed + 2)
        n = max(1, len(data.val) // (held_out.length * data.batch_size))
        with torch.no_grad():
            losses = [span_loss(model, tuple(t.to(data.device) for t in held_out.batch(i))) for i in range(n)]
        return {"span_loss": float(torch.stack(losses).mean())}

    return Pretraining(
        config,
        Objective(
            windows(data.train, data.context, data.batch_size, data.seed).batch,
            span_loss,
            data.evaluation(windows, span_loss),
            flops_per_token=model_flops_per_token(config, data.context),
        ),
        final=final,
        tokenizer=tokenizer,
    )
