"""Language-modelling losses: next-token cross-entropy on every token (pretraining) or on labelled ones (SFT)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...data.batching import length_batches
from ...data.chat import IGNORE, Example, collate
from ...data.shards import RandomWindows


def causal_lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy in nats over windows (x, y)."""
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled (assistant) tokens of a right-padded batch.

    No attention mask is needed: with right padding, causal attention never lets a real token see a pad,
    and positions count from 0 as they do unpadded. The LM head runs only at labelled positions (`keep`):
    for short answers after long prompts (a label after a review) the head and its softmax over the
    vocabulary were most of the memory and a large share of the time, spent on outputs that carry no loss.
    """
    labels = batch["labels"]
    keep = labels != IGNORE
    logits = model(batch["input_ids"], keep=keep)
    return F.cross_entropy(logits.float(), labels[keep])


def heldout_loss(
    examples: list[Example], batch_size: int, n_batches: int, pad_id: int, device: torch.device
) -> Callable[[nn.Module], dict[str, float]] | None:
    """An evaluation: the token-weighted `sft_loss` over the first `n_batches` length-batches of held-out
    `examples` ("val_loss"); None when there is nothing to evaluate."""
    order = length_batches([len(e.input_ids) for e in examples], batch_size, 0)[:n_batches]
    if not order:
        return None

    def evaluate(model: nn.Module) -> dict[str, float]:
        total, n = 0.0, 0
        for rows in order:
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in rows], pad_id).items()}
            labelled = int((batch["labels"] != IGNORE).sum())
            total, n = total + float(sft_loss(model, batch)) * labelled, n + labelled
        return {"val_loss": total / n}

    return evaluate


def window_loss(
    tokens, context: int, batch_size: int, n_batches: int, seed: int, device: torch.device
) -> Callable[[nn.Module], dict[str, float]]:
    """An evaluation: the mean `causal_lm_loss` ("val_loss") over `n_batches` random windows of `tokens`,
    the same windows every time."""
    windows = RandomWindows(tokens, context, batch_size, seed=seed)

    def evaluate(model: nn.Module) -> dict[str, float]:
        batches = (tuple(t.to(device) for t in windows.batch(i)) for i in range(n_batches))
        return {"val_loss": float(torch.stack([causal_lm_loss(model, b) for b in batches]).mean())}

    return evaluate
