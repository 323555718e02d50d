"""`tinylm ppo`: RLHF with Proximal Policy Optimization, as InstructGPT did it.

Per round (see `tinylm.train.rl` for how rounds keep resume exact):

1. sample one completion per prompt from the policy through the generation engine;
2. score it: a learned reward model (`--reward_model`, from `tinylm reward train`) or a verifiable reward
   (`--reward poem|arithmetic`); optionally whiten the scores over the batch;
3. per-token reward = −kl_coef · (log π − log π_ref) at every completion token, plus the score at the last
   one, so the policy is paid for the score and charged for drifting from the frozen reference;
4. advantages by GAE(γ, λ) from the value head's estimates, whitened; returns = advantages + values;
5. `epochs × minibatches` optimizer steps on the clipped policy loss + vf_coef · clipped value loss;
6. with a `target_kl`, adapt kl_coef (Ziegler et al. 2019): multiply it by 1 + clip(KL/target − 1, ±0.2)·n/horizon.

The value head shares the policy's trunk (`PolicyWithValue`): one forward pass yields both, which on a CPU
halves the cost of a separate critic. Logged per step: loss, policy and value loss, the rollout's score and
KL, the kl coefficient, entropy and clip fraction; at each evaluation the verifiable reward on held-out prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TinyLMError
from ..model.heads import VALUE_HEAD, PolicyWithValue
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .reward import RewardScorer
from .rl import (
    RLConfig,
    RLRun,
    clipped_surrogate,
    entropy,
    masked_mean,
    masked_whiten,
    pack,
    sample,
    score,
    sequence_logprobs,
    token_logprobs,
)


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


def ppo(
    data: str,
    model: str,
    out: str,
    reward_model: str | None = None,
    reward: str | None = None,
    eval_data: str | None = None,
    ppo: PPOConfig | None = None,
    train: TrainConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """RLHF with PPO: policy, frozen reference, value head, and a learned or verifiable reward.

    Args:
        data: Prompt JSONL (conversations, prompt / completion or prompt-only rows), or a directory with
            train.jsonl and test.jsonl.
        model: Checkpoint to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        reward_model: Reward model directory from `tinylm reward train`; it must use the policy's tokenizer.
        reward: Verifiable reward: poem (form and rhyme) or arithmetic. Trained on without a reward_model;
            with one, it only measures the policy on held-out prompts.
        eval_data: Held-out prompt JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        ppo: PPO's hyperparameters.
        train: Optimizer, schedule and budget; train.batch_size counts completions per micro-batch.
        overwrite: Replace an output directory that holds a different run.
    """
    config, train = ppo or PPOConfig(), train or TrainConfig()
    if reward_model is None and reward is None:
        raise TinyLMError("give --reward_model DIR (a learned reward) or --reward poem|arithmetic")
    scorer = None
    if reward_model is not None:  # checked first: a mismatch should not wait for the policy to load
        scorer = RewardScorer.load(reward_model)
        policy_hash = Tokenizer.load(model).hash
        if scorer.tokenizer.hash != policy_hash:
            raise TinyLMError(
                f"reward model {reward_model} uses a different tokenizer than the policy {model} "
                f"(tokenizer.json sha256 {scorer.tokenizer.hash[:12]} vs {policy_hash[:12]}); "
                "train the reward model from the policy's checkpoint"
            )
    run = RLRun.start(
        data,
        model,
        out,
        reward,
        eval_data,
        config,
        train,
        overwrite,
        trained_on_reward=reward_model is None,
        reward_model=reward_model,
    )
    if scorer is not None:
        scorer.model.to(run.device)
    pv = PolicyWithValue(run.policy, config.kl_coef)

    @torch.no_grad()
    def make(rnd: int, seed: int) -> dict[str, torch.Tensor]:
        chosen = run.choose_prompts(random.Random(seed), run.rollout_size)
        ids = [p.ids for p in chosen]
        seqs = sample(pv.policy, run.tokenizer, ids, config.max_new_tokens, 1.0, seed)
        if scorer is not None:
            convs = [
                [*p.messages, {"role": "assistant", "content": s.text}]
                for p, s in zip(chosen, seqs, strict=True)
            ]
            scores = torch.tensor(scorer.score(convs))
        else:
            scores = torch.tensor(
                [score(reward, s.text, p.fields)["reward"] for p, s in zip(chosen, seqs, strict=True)]
            )
        batch = {
            k: v.to(run.device)
            for k, v in pack(ids, [s.token_ids for s in seqs], run.tokenizer.pad_id).items()
        }
        mask = batch["action_mask"]
        logits, values = pv(batch["input_ids"], batch["attention_mask"])
        old_logp = token_logprobs(logits, batch["input_ids"])
        values = values[:, :-1].float() * mask
        kl = (old_logp - sequence_logprobs(run.reference, batch)) * mask
        scaled = masked_whiten(scores, torch.ones_like(scores)) if config.whiten_rewards else scores
        rewards = -float(pv.kl_coef) * kl
        last = mask.long().cumsum(-1).argmax(-1)  # the last action position of each row
        rewards[torch.arange(len(ids), device=rewards.device), last] += scaled.to(rewards)
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
        seq_kl, coef_used = kl.sum(-1), torch.full_like(scores, float(pv.kl_coef))
        if config.target_kl is not None:
            coef = adapt_kl_coef(
                float(pv.kl_coef), float(seq_kl.mean()), config.target_kl, len(ids), config.kl_horizon
            )
            pv.kl_coef.fill_(coef)
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

    return run.train(
        pv, make, lambda m, b: ppo_loss(m, b, config), heads={VALUE_HEAD: pv.value_head}, desc="ppo"
    )
