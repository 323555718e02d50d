"""GRPO (DeepSeekMath, Shao et al. 2024): group-relative advantages on a verifiable reward, no value model.

Each prompt is sampled `group_size` times, and a completion's advantage is its reward standardised within
its group, A_i = (r_i − mean(r_group)) / (std(r_group) + ε): better than its siblings means positive. A group
whose completions all score the same teaches nothing and gets zero advantage. The loss per completion token
is PPO's clipped surrogate with that advantage plus β times the k3 estimate of KL(π‖π_ref) to the frozen
reference, averaged over all completion tokens of the micro-batch (so long and short completions weigh per
token, as in DAPO and Dr. GRPO, rather than per sequence).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...data.prompts import pack
from ...errors import TinyLMError
from ...infer.scoring import sequence_logprobs, token_logprobs
from .losses import clipped_surrogate, k3_kl, masked_mean
from .rollout import RLConfig, Sampler


@dataclass
class GRPOConfig(RLConfig):
    """GRPO's knobs on top of the shared rollout settings."""

    group_size: int = 8
    """Completions sampled per prompt; the rollout size must be a multiple of it."""
    beta: float = 0.04
    """Weight of the KL-to-reference penalty in the loss."""

    def validate(self) -> None:
        super().validate()
        if self.group_size < 2:
            raise TinyLMError(
                f"group_size must be at least 2 (advantages compare siblings), got {self.group_size}"
            )
        if self.beta < 0:
            raise TinyLMError(f"beta must be >= 0, got {self.beta}")


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r − group mean) / (group std + eps) for rewards laid out group after group (B,)."""
    groups = rewards.view(-1, group_size)
    mean, std = groups.mean(-1, keepdim=True), groups.std(-1, keepdim=True)
    return ((groups - mean) / (std + eps)).view(-1)


def grpo_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], config: GRPOConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate with per-sequence advantages + β · k3 KL to the reference, per completion token."""
    mask = batch["action_mask"]
    logp = token_logprobs(model(batch["input_ids"], batch["attention_mask"]), batch["input_ids"])
    policy_loss, clip_frac = clipped_surrogate(
        logp, batch["old_logprobs"], batch["advantages"][:, None], mask, config.clip
    )
    kl = masked_mean(k3_kl(logp, batch["ref_logprobs"]), mask)
    metrics = {
        "policy_loss": float(policy_loss.detach()),
        "kl": float(kl.detach()),
        "clip_frac": float(clip_frac),
        "reward": float(batch["reward"].mean()),
        "informative_groups": float(batch["informative"].mean()),
    }
    return policy_loss + config.beta * kl, metrics


def grpo_rollouts(
    policy: nn.Module,
    reference: nn.Module,
    sampler: Sampler,
    choose: Callable[[random.Random, int], list],
    scores: Callable[[list, list[str]], list[float]],
    n: int,
    config: GRPOConfig,
    pad_id: int,
) -> Callable[[int, int], dict[str, torch.Tensor]]:
    """The maker of GRPO's rollout of a round: n // group_size prompts, each answered group_size times."""
    G = config.group_size

    @torch.no_grad()
    def make(rnd: int, seed: int) -> dict[str, torch.Tensor]:
        device = next(policy.parameters()).device
        chosen = choose(random.Random(seed), n // G)
        grouped = [p for p in chosen for _ in range(G)]
        ids = [p.ids for p in grouped]
        seqs = sampler(ids, config.max_new_tokens, seed)
        rewards = torch.tensor(scores(grouped, [s.text for s in seqs]), dtype=torch.float32)
        batch = {k: v.to(device) for k, v in pack(ids, [s.token_ids for s in seqs], pad_id).items()}
        spread = rewards.view(-1, G).std(-1) > 0
        rollout = {
            **batch,
            "old_logprobs": sequence_logprobs(policy, batch),
            "ref_logprobs": sequence_logprobs(reference, batch),
            "advantages": group_advantages(rewards, G).to(device),
            "reward": rewards,
            "informative": spread.repeat_interleave(G).float(),
        }
        return {k: v.cpu() for k, v in rollout.items()}

    return make
