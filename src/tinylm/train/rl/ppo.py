"""PPO as InstructGPT ran it: a value head on the policy's trunk, GAE advantages, a KL penalty per token.

Per round: sample one completion per prompt; score it (a learned reward model, or a verifiable reward),
optionally whitened over the batch; per-token reward = −kl_coef · (log π − log π_ref) at every completion
token plus the score at the last one; advantages by GAE(γ, λ) from the value head, whitened; returns =
advantages + values. Then `epochs × minibatches` steps on the clipped policy loss + vf_coef · clipped value
loss. With a `target_kl`, kl_coef adapts after each round (Ziegler et al. 2019): it is multiplied by
1 + clip(KL/target − 1, ±0.2)·n/horizon, and kept in the objective's state so a resume continues it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...data.prompts import pack
from ...errors import TinyLMError
from ...infer.scoring import sequence_logprobs, token_logprobs
from ...models.heads import PolicyWithValue
from .losses import clipped_surrogate, entropy, masked_mean, masked_whiten
from .rollout import RLConfig, Sampler


@dataclass
class PPOConfig(RLConfig):
    """PPO's knobs on top of the shared rollout settings."""

    epochs: int = 2
    minibatches: int = 2
    value_clip: float = 0.2
    """Clip range of the value estimate around its rollout-time value."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    gamma: float = 1.0
    lam: float = 0.95
    """GAE's λ: 1 is the Monte Carlo return, 0 the one-step TD error."""
    kl_coef: float = 0.05
    """Initial (or, without target_kl, fixed) coefficient of the per-token KL penalty."""
    target_kl: float | None = None
    """Adaptive KL control: the per-sequence KL to aim for; None keeps kl_coef fixed."""
    kl_horizon: int = 1000
    """Adaptive KL control's horizon, in samples: how fast the coefficient moves."""
    whiten_rewards: bool = True
    """Normalise the scores of each rollout batch to mean 0 and std 1 (a learned reward's scale is arbitrary)."""

    def validate(self) -> None:
        super().validate()
        if self.kl_coef < 0 or (self.target_kl is not None and self.target_kl <= 0):
            raise TinyLMError("kl_coef must be >= 0 and target_kl positive (or null)")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (B, N) over contiguous action positions (mask).

    A_t = Σ_k (γλ)^k δ_{t+k},  δ_t = r_t + γ·V_{t+1} − V_t, with V = 0 after the last action.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_mask = mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_mask if t + 1 < values.shape[1] else next_mask
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """½·mean(max((V − R)², (V_clipped − R)²)), V_clipped = V_old + clip(V − V_old, ±clip)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def adapt_kl_coef(coef: float, kl: float, target: float, n: int, horizon: int) -> float:
    """Ziegler et al.'s adaptive KL controller: one update after a rollout of `n` samples with mean KL `kl`."""
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * n / horizon)


def ppo_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], config: PPOConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy loss + vf_coef · clipped value loss on a minibatch of the rollout."""
    logits, values = model(batch["input_ids"], batch["attention_mask"])
    mask = batch["action_mask"]
    logp = token_logprobs(logits, batch["input_ids"])
    policy_loss, clip_frac = clipped_surrogate(
        logp, batch["old_logprobs"], batch["advantages"], mask, config.clip
    )
    v_loss = value_loss(
        values[:, :-1].float(), batch["old_values"], batch["returns"], mask, config.value_clip
    )
    metrics = {
        "policy_loss": float(policy_loss.detach()),
        "value_loss": float(v_loss.detach()),
        "clip_frac": float(clip_frac),
        "entropy": float(masked_mean(entropy(logits.detach()), mask)),
        "score": float(batch["score"].mean()),
        "kl": float(batch["kl"].mean()),
        "kl_coef": float(batch["kl_coef"].mean()),
    }
    return policy_loss + config.vf_coef * v_loss, metrics


class PPORollouts:
    """Makes PPO's rollout of a round: samples, scores, KL-penalised rewards, values, GAE; owns the KL
    coefficient (its `state_dict` is saved with the rollout)."""

    def __init__(
        self,
        pv: PolicyWithValue,
        reference: nn.Module,
        sampler: Sampler,
        choose: Callable[[random.Random, int], list],
        scores: Callable[[list, list[str]], list[float]],
        n: int,
        config: PPOConfig,
        pad_id: int,
    ) -> None:
        self.pv, self.reference, self.sampler, self.choose, self.scores = (
            pv,
            reference,
            sampler,
            choose,
            scores,
        )
        self.n, self.config, self.pad_id = n, config, pad_id
        self.kl_coef = config.kl_coef

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_coef = state["kl_coef"]

    @torch.no_grad()
    def __call__(self, rnd: int, seed: int) -> dict[str, torch.Tensor]:
        config, device = self.config, next(self.pv.parameters()).device
        chosen = self.choose(random.Random(seed), self.n)
        ids = [p.ids for p in chosen]
        seqs = self.sampler(ids, config.max_new_tokens, seed)
        scores = torch.tensor(self.scores(chosen, [s.text for s in seqs]), dtype=torch.float32)
        batch = {k: v.to(device) for k, v in pack(ids, [s.token_ids for s in seqs], self.pad_id).items()}
        mask = batch["action_mask"]
        logits, values = self.pv(batch["input_ids"], batch["attention_mask"])
        old_logp = token_logprobs(logits, batch["input_ids"])
        values = values[:, :-1].float() * mask
        kl = (old_logp - sequence_logprobs(self.reference, batch)) * mask
        scaled = masked_whiten(scores, torch.ones_like(scores)) if config.whiten_rewards else scores
        rewards = -self.kl_coef * kl
        last = mask.long().cumsum(-1).argmax(-1)  # the last action position of each row
        rewards[torch.arange(len(ids), device=rewards.device), last] += scaled.to(rewards)
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
        seq_kl, coef_used = kl.sum(-1), torch.full_like(scores, self.kl_coef)
        if config.target_kl is not None:
            self.kl_coef = adapt_kl_coef(
                self.kl_coef, float(seq_kl.mean()), config.target_kl, len(ids), config.kl_horizon
            )
        rollout = {
            **batch,
            "old_logprobs": old_logp,
            "old_values": values,
            "advantages": masked_whiten(advantages, mask),
            "returns": returns,
            "score": scores,
            "kl": seq_kl,
            "kl_coef": coef_used,
        }
        return {k: v.cpu() for k, v in rollout.items()}
