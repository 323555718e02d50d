"""Log-probabilities of given tokens under a model: KL estimates, RL's old and reference log-probabilities."""

from __future__ import annotations

import torch
from torch import nn


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) for every position t (B, T-1), from logits (B, T, V)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def sequence_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token log-probabilities (B, T-1) of packed rows (`input_ids`, `attention_mask`) under `model`."""
    return token_logprobs(model(batch["input_ids"], batch["attention_mask"]), batch["input_ids"])
