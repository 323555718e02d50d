"""Language-modelling losses: next-token cross-entropy on every token (pretraining) or on labelled ones (SFT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.chat import IGNORE


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
