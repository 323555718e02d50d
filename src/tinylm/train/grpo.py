"""`tinylm grpo`: Group Relative Policy Optimization on verifiable rewards (DeepSeekMath, Shao et al. 2024).

No value model: each prompt is sampled `group_size` times, and a completion's advantage is its reward
standardised within its group, A_i = (r_i − mean(r_group)) / (std(r_group) + ε): better than its siblings
means positive. A group whose completions all score the same teaches nothing and gets zero advantage. The
loss per completion token is PPO's clipped surrogate with that advantage plus β times the k3 estimate of
KL(π‖π_ref) to the frozen reference, averaged over all completion tokens of the micro-batch (so long and
short completions weigh per token, as in DAPO and Dr. GRPO, rather than per sequence).

Rewards are programs a reader can check (`tinylm.eval.rewards`): a poem's form and rhyme, or whether an
arithmetic answer is right. Logged per step: loss, the rollout's mean reward, KL, clip fraction, and the
share of groups with any spread of reward (the ones that teach).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TinyLMError
from .config import TrainConfig
from .rl import (
    RLConfig,
    RLRun,
    clipped_surrogate,
    k3_kl,
    masked_mean,
    pack,
    sample,
    score,
    sequence_logprobs,
    token_logprobs,
)


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


def grpo(
    data: str,
    model: str,
    out: str,
    reward: str = "poem",
    eval_data: str | None = None,
    grpo: GRPOConfig | None = None,
    train: TrainConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Align a model with GRPO on a verifiable reward: group sampling, group-normalised advantages, KL to reference.

    Args:
        data: Prompt JSONL whose rows carry what the reward checks (`form` for poem, `answer` for
            arithmetic), or a directory with train.jsonl and test.jsonl.
        model: Checkpoint to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        reward: poem (form and rhyme of the asked form) or arithmetic (the final number is the answer).
        eval_data: Held-out prompt JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        grpo: GRPO's hyperparameters.
        train: Optimizer, schedule and budget; train.batch_size counts completions per micro-batch.
        overwrite: Replace an output directory that holds a different run.
    """
    config, train = grpo or GRPOConfig(), train or TrainConfig()
    run = RLRun.start(data, model, out, reward, eval_data, config, train, overwrite)
    G = config.group_size
    if run.rollout_size % G:
        raise TinyLMError(
            f"train.batch_size × train.grad_accum × minibatches = {run.rollout_size} completions per round "
            f"must be a multiple of group_size={G}"
        )

    @torch.no_grad()
    def make(rnd: int, seed: int) -> dict[str, torch.Tensor]:
        chosen = run.choose_prompts(random.Random(seed), run.rollout_size // G)
        ids = [p.ids for p in chosen for _ in range(G)]
        seqs = sample(run.policy, run.tokenizer, ids, config.max_new_tokens, 1.0, seed)
        rewards = torch.tensor(
            [score(reward, s.text, chosen[i // G].fields)["reward"] for i, s in enumerate(seqs)]
        )
        batch = {
            k: v.to(run.device)
            for k, v in pack(ids, [s.token_ids for s in seqs], run.tokenizer.pad_id).items()
        }
        spread = rewards.view(-1, G).std(-1) > 0
        rollout = {
            **batch,
            "old_logprobs": sequence_logprobs(run.policy, batch),
            "ref_logprobs": sequence_logprobs(run.reference, batch),
            "advantages": group_advantages(rewards, G).to(run.device),
            "reward": rewards,
            "informative": spread.repeat_interleave(G).float(),
        }
        return {k: v.cpu() for k, v in rollout.items()}

    return run.train(run.policy, make, lambda m, b: grpo_loss(m, b, config), desc="grpo")
