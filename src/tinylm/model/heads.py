"""Scalar heads on the language model's final hidden states: a reward model and a policy with a value head.

Alignment needs numbers, not next-token distributions: a reward model scores a whole conversation, and
PPO's critic estimates the return from each position. Both are one linear map from `TinyLM.hidden()` to a
scalar, so they reuse the pretrained body and cost almost nothing on top of it.

A head is stored beside a checkpoint as `<name>.safetensors` (its weight and bias); the body is an ordinary
checkpoint directory, so `tinylm generate` and `transformers` still load it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import TinyLMError
from ..io import atomic_dir
from .checkpoint import load_model, save_checkpoint
from .decoder import TinyLM

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


class RewardModel(nn.Module):
    """The LM body with a scalar head read at the last real token: one score per sequence."""

    def __init__(self, body: TinyLM) -> None:
        super().__init__()
        self.body = body
        self.head = ScalarHead(body.config.d_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body.hidden(input_ids, attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
        return self.head(last)


class PolicyWithValue(nn.Module):
    """A policy and a value head sharing its trunk: one forward pass gives logits and per-position values.

    `kl_coef` is PPO's (possibly adaptive) KL coefficient. It is a buffer so that it is saved and restored
    with the weights by the training loop's checkpoints, which keeps a resumed run on the same trajectory.
    """

    def __init__(self, policy: TinyLM, kl_coef: float = 0.0) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = ScalarHead(policy.config.d_model)
        self.register_buffer("kl_coef", torch.tensor(float(kl_coef), dtype=torch.float64))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.policy.hidden(input_ids, attention_mask)
        return self.policy.lm_head(hidden), self.value_head(hidden)


def save_head(head: ScalarHead, model_dir: str | os.PathLike, name: str) -> None:
    """Write `head` into an existing checkpoint directory as `<name>.safetensors`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, Path(model_dir) / f"{name}.safetensors", metadata={"format": "pt"})


def load_head(model_dir: str | os.PathLike, name: str, d_model: int) -> ScalarHead:
    """The head `<name>.safetensors` of a checkpoint directory, checked against the body's width."""
    path = Path(model_dir) / f"{name}.safetensors"
    if not path.is_file():
        raise TinyLMError(f"{model_dir} holds no {path.name}: it is not a tinylm model with a {name}")
    head = ScalarHead(d_model)
    state = load_file(path)
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise TinyLMError(f"{path}: tensors {found} do not fit a head on d_model={d_model} ({expected})")
    head.load_state_dict(state)
    return head


def save_reward_model(
    model: RewardModel, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike
) -> Path:
    """Write the body as a checkpoint (with tokenizer) plus `reward_head.safetensors`, atomically as a whole."""
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(model.body, tmp, tokenizer_dir)
        save_head(model.head, tmp, REWARD_HEAD)
    return Path(out_dir)


def load_reward_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> RewardModel:
    """A RewardModel in eval mode from a directory written by `save_reward_model`."""
    body = load_model(model_dir)
    model = RewardModel(body)
    model.head = load_head(model_dir, REWARD_HEAD, body.config.d_model)
    return model.to(device).eval()
