"""Losses on preference pairs: the reward model's Bradley–Terry loss, and DPO's.

A collated pair batch holds B chosen rows, then B rejected rows (`tinylm.data.chat.collate_pairs`), so one
forward pass scores both sides.

    Bradley–Terry:  −log σ(r(x, y_c) − r(x, y_r))
    DPO:            −log σ(β·[(log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))])

β·(log π − log π_ref) is an answer's *implicit reward*.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from ...data.chat import IGNORE
from ...data.preferences import collate_pairs
from ...io import atomic_file


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean −log σ(r_c − r_r) over pairs, with the pairs' accuracy (r_c > r_r) and mean margin."""
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    margin = margin.detach()
    return loss, {"accuracy": float((margin > 0).float().mean()), "margin": float(margin.mean())}


def answer_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ log π(answer tokens) of each row of a collated batch: the tokens whose label is not IGNORE. The LM
    head runs only at those positions."""
    labels = batch["labels"]
    keep = labels != IGNORE
    logits = model(batch["input_ids"], batch["attention_mask"], keep=keep).float()
    logp = logits.log_softmax(-1).gather(-1, labels[keep][:, None]).squeeze(-1)
    rows = keep.nonzero()[:, 0]
    return torch.zeros(labels.shape[0], dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss (mean over pairs) from answer log-probabilities under the policy and the reference,
    with the implicit rewards' accuracy, mean margin and means."""
    chosen_reward = beta * (chosen - ref_chosen)
    rejected_reward = beta * (rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    margin, chosen_reward, rejected_reward = margin.detach(), chosen_reward.detach(), rejected_reward.detach()
    metrics = {
        "reward_accuracy": float((margin > 0).float().mean()),
        "reward_margin": float(margin.mean()),
        "chosen_reward": float(chosen_reward.mean()),
        "rejected_reward": float(rejected_reward.mean()),
    }
    return loss, metrics


@torch.no_grad()
def pair_logprobs(model: nn.Module, pairs: list, pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """(N, 2) answer log-probabilities of each pair's chosen and rejected side under `model`."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[i : i + batch_size], pad_id)
        out.append(answer_logprobs(model, {k: v.to(device) for k, v in batch.items()}).view(2, -1).T.cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate_dpo(
    model: nn.Module, pairs: list, ref: torch.Tensor, pad_id: int, beta: float, batch_size: int = 32
) -> dict[str, float]:
    """Held-out DPO loss ("val_loss") and implicit-reward metrics, weighted by pairs."""
    policy = pair_logprobs(model, pairs, pad_id, batch_size)
    loss, metrics = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta)
    return {"val_loss": float(loss), **metrics}


def reference_logprobs(
    path: Path, model: nn.Module, splits: dict[str, list], pad_id: int
) -> dict[str, torch.Tensor]:
    """DPO's reference log-probabilities of every split, stored at `path` (a resumed run reads them back):
    the reference never changes, so it need not stay in memory nor cost anything per step."""
    splits = {k: v for k, v in splits.items() if v}
    if path.is_file():
        saved = load_file(path)
        if all(k in saved and len(saved[k]) == len(v) for k, v in splits.items()):
            return saved
    print(f"dpo: computing reference log-probabilities of {sum(map(len, splits.values()))} pairs")
    ref = {k: pair_logprobs(model.eval(), v, pad_id).contiguous() for k, v in splits.items()}
    with atomic_file(path, "wb") as f:
        f.write(save(ref))
    return ref
