"""Scalar heads on a backbone's final hidden states: a reward model and a policy with a value head.

Alignment needs numbers, not next-token distributions: a reward model scores a whole conversation, and
PPO's critic estimates the return from each position. Both are one linear map from `Backbone.hidden()` to a
scalar, so they reuse the pretrained body and cost almost nothing on top of it. A `HeadedModel` keeps its
heads by name; `save_model` writes each beside the body as `<name>.safetensors`, so `tinylm generate` and
`transformers` still load the body.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .base import Backbone
from .checkpoint import load_head, load_model

REWARD_HEAD = "reward_head"
VALUE_HEAD = "value_head"


class ScalarHead(nn.Module):
    """A linear map from hidden states (..., d_model) to one number per position (...)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.normal_(self.proj.weight, std=1.0 / (d_model + 1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (B,), for left or right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


class HeadedModel(nn.Module):
    """A backbone (`body`) with named scalar heads beside it (`heads`)."""

    head_names: tuple[str, ...] = ()

    def __init__(self, body: Backbone) -> None:
        super().__init__()
        self.body = body
        self.heads = nn.ModuleDict({name: ScalarHead(body.config.d_model) for name in self.head_names})

    def blank(self) -> HeadedModel:
        """A new model of the same structure, freshly initialised."""
        return type(self)(self.body.blank())


class RewardModel(HeadedModel):
    """The body with a scalar head read at the last real token: one score per sequence."""

    head_names = (REWARD_HEAD,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body.hidden(input_ids, attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
        return self.heads[REWARD_HEAD](last)


class PolicyWithValue(HeadedModel):
    """A policy and a value head sharing its trunk: one forward pass gives logits and per-position values."""

    head_names = (VALUE_HEAD,)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body.hidden(input_ids, attention_mask)
        return self.body.lm_head(hidden), self.heads[VALUE_HEAD](hidden)


def load_reward_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> RewardModel:
    """A RewardModel in eval mode from a directory that `save_model` wrote for one."""
    model = RewardModel(load_model(model_dir))
    load_head(model_dir, REWARD_HEAD, model.heads[REWARD_HEAD])
    return model.to(device).eval()
