"""A model's answers to prompts, scored by a task's reward and metrics, with KL to a reference.

One function serves RL's held-out evaluation (before and after training, same prompts and seed) and
`tinylm eval run`. Every score is a reward (`tinylm.tasks.rewards`), so a reader can recompute it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.prompts import EncodedPrompt, pack
from ..infer.engine import sample
from ..infer.sampling import SamplingParams
from ..infer.scoring import sequence_logprobs
from ..tasks.rewards import Reward, reward_name, score


@dataclass
class Scored:
    """Answers, the reward of each, and the means: "reward", one per metric, and (when sampled)
    "completion_tokens" and, against a reference, "kl"."""

    texts: list[str]
    rewards: list[float]
    means: dict[str, float]


def score_answers(
    texts: list[str],
    prompts: list[EncodedPrompt],
    reward: str | Reward,
    metrics: tuple[str | Reward, ...] = (),
) -> Scored:
    """The reward of each answer to its prompt, and the mean reward and metrics."""
    rows = [p.fields for p in prompts]
    rewards = score(reward, texts, rows)
    means = {"reward": sum(rewards) / len(prompts)}
    for metric in metrics:
        means[reward_name(metric)] = sum(score(metric, texts, rows)) / len(prompts)
    return Scored(texts, rewards, means)


@torch.no_grad()
def evaluate_answers(
    model: nn.Module,
    tokenizer,
    prompts: list[EncodedPrompt],
    reward: str | Reward,
    params: SamplingParams,
    metrics: tuple[str | Reward, ...] = (),
    reference: nn.Module | None = None,
) -> Scored:
    """One sampled answer per prompt (row i uses params.seed + i), scored by `reward` and `metrics`.

    With a `reference`, also "kl": the mean over answers of Σ_t log π/π_ref, a Monte Carlo estimate of the
    sequence-level KL(π‖π_ref) (meaningful at temperature 1, the policy's own distribution).
    """
    ids = [p.ids for p in prompts]
    seqs = sample(model, tokenizer, ids, params)
    scored = score_answers([s.text for s in seqs], prompts, reward, metrics)
    if reference is not None:
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in pack(ids, [s.token_ids for s in seqs], tokenizer.pad_id).items()}
        diff = (sequence_logprobs(model, batch) - sequence_logprobs(reference, batch)) * batch["action_mask"]
        scored.means["kl"] = float(diff.sum(-1).mean())
    scored.means["completion_tokens"] = sum(len(s.token_ids) for s in seqs) / len(seqs)
    return scored
