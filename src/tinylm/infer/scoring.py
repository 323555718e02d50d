"""Log-probabilities of given tokens under a model: KL estimates, RL's old and reference log-probabilities,
and the likelihood of candidate answers (evaluation by label log-likelihood)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.base import Backbone


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) for every position t (B, T-1), from logits (B, T, V)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def sequence_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token log-probabilities (B, T-1) of packed rows (`input_ids`, `attention_mask`) under `model`."""
    return token_logprobs(model(batch["input_ids"], batch["attention_mask"]), batch["input_ids"])


@torch.inference_mode()
def continuation_logprobs(model: Backbone, prefix: list[int], continuations: list[list[int]]) -> list[float]:
    """log π(continuation | prefix), summed over its tokens, for each of several continuations of one prefix.

    The prefix is usually most of the tokens, so it runs through the model once, into the cache the engine
    decodes with; the cache's rows are then replicated and all continuations run together in one forward
    pass, right-padded (positions follow from the mask, so padding changes nothing).
    """
    if not prefix or not continuations or not all(continuations):
        raise ValueError("continuation_logprobs needs a non-empty prefix and non-empty continuations")
    device, n = model.device, len(continuations)
    longest = max(map(len, continuations))
    cache = model.new_cache(1, len(prefix) + longest)
    first = model(torch.tensor([prefix], device=device), cache=cache, keep=1)  # (1, 1, V): predicts token 0
    logits = first.expand(n, 1, -1)
    targets = torch.zeros(n, longest, dtype=torch.long, device=device)
    scored = torch.zeros(n, longest, dtype=torch.bool, device=device)
    for i, c in enumerate(continuations):
        targets[i, : len(c)] = torch.tensor(c)
        scored[i, : len(c)] = True
    if longest > 1:  # feed every token but the last; each predicts the one after it
        cache.keep([0] * n)
        rest = model(targets[:, :-1], attention_mask=scored[:, :-1].long(), cache=cache)
        logits = torch.cat([logits, rest], dim=1)
    logp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    return (logp * scored).sum(-1).tolist()
