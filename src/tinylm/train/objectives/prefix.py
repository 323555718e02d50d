"""Prefix-LM pretraining (UniLM): each window is split at a random point; the model reads the part before
it bidirectionally and learns to continue it, with the loss on the continuation only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.shards import RandomWindows
from ...models import ModelConfig, model_flops_per_token
from ..loop import Objective
from .pretraining import PretrainData, Pretraining


class PrefixWindows:
    """Random windows with a split point per row in [1, context): batch i is a pure function of (seed, i)."""

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int = 0) -> None:
        self.windows, self.context, self.seed = (
            RandomWindows(tokens, context, batch_size, seed),
            context,
            seed,
        )

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, prefix): windows, next tokens, and how many leading tokens of each row are the prefix."""
        x, y = self.windows.batch(i)
        rng = np.random.default_rng([self.seed, i, 1])
        return x, y, torch.from_numpy(rng.integers(1, self.context, size=len(x)))


def prefix_lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy where the target lies after the prefix (inside it the answer is visible)."""
    x, y, prefix = batch
    keep = torch.arange(x.shape[1], device=x.device) >= (prefix - 1)[:, None]
    return F.cross_entropy(model(x, keep=keep, prefix=prefix).float(), y[keep])


def prefix_pretraining(config: ModelConfig, data: PretrainData) -> Pretraining:
    """A prefix LM on random splits; scored in bits per byte at the end (a prefix of 0 reads causally)."""
    config = replace(config, prefix_lm=True)
    windows = PrefixWindows(data.train, data.context, data.batch_size, seed=data.seed)
    return Pretraining(
        config,
        Objective(
            windows.batch,
            prefix_lm_loss,
            data.evaluation(PrefixWindows, prefix_lm_loss),
            flops_per_token=model_flops_per_token(config, data.context),
        ),
        final=data.split_bpb,
    )
