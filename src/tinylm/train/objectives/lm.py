"""Language-modelling losses: next-token cross-entropy on every token (causal pretraining) or on labelled ones
(SFT), and the held-out evaluations built on them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...data.batching import length_batches
from ...data.chat import IGNORE, Example, collate
from ...data.shards import RandomWindows
from ...models import ModelConfig, model_flops_per_token
from ..loop import Objective
from .pretraining import PretrainData, Pretraining


def causal_lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy in nats over windows (x, y)."""
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor], prefix_lm: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the labelled (assistant) tokens of a right-padded batch.

    No attention mask is needed: with right padding, causal attention never lets a real token see a pad,
    and positions count from 0 as they do unpadded. The LM head runs only at labelled positions (`keep`):
    for short answers after long prompts (a label after a review) the head and its softmax over the
    vocabulary were most of the memory and a large share of the time, spent on outputs that carry no loss.
    A prefix LM reads everything up to the first answer token as its bidirectional prefix (the prompt).
    """
    labels = batch["labels"]
    keep = labels != IGNORE
    prefix = keep.int().argmax(1) + 1 if prefix_lm else None
    logits = model(batch["input_ids"], keep=keep, prefix=prefix)
    return F.cross_entropy(logits.float(), labels[keep])


def heldout_loss(
    examples: list[Example],
    batch_size: int,
    n_batches: int,
    pad_id: int,
    device: torch.device,
    prefix_lm: bool = False,
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
            total, n = total + float(sft_loss(model, batch, prefix_lm)) * labelled, n + labelled
        return {"val_loss": total / n}

    return evaluate


def causal_pretraining(config: ModelConfig, data: PretrainData) -> Pretraining:
    """Next-token prediction at every position of random windows; scored in bits per byte at the end."""
    windows = RandomWindows(data.train, data.context, data.batch_size, seed=data.seed)
    return Pretraining(
        config,
        Objective(
            windows.batch,
            causal_lm_loss,
            data.evaluation(RandomWindows, causal_lm_loss),
            flops_per_token=model_flops_per_token(config, data.context),
        ),
        final=data.split_bpb,
    )
