"""`tinylm dpo`: Direct Preference Optimization on preference pairs, against a frozen reference.

DPO (Rafailov et al. 2023) trains the policy directly on pairs, with the loss

    loss = −log σ(β·[(log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))])

where β·(log π − log π_ref) is the *implicit reward* of an answer. The reference is the starting model and
never changes, so its log-probabilities of every pair are computed once before training and stored in
`<out>/reference_logps.safetensors` (a resumed run reads them back): the reference model is not kept in
memory and costs nothing per step. Logged per step and at each evaluation on held-out pairs: the loss, the
implicit-reward accuracy (how often the chosen answer gets the larger implicit reward), the mean margin and
the mean implicit rewards of chosen and rejected answers.

Run directory: config.yaml, metrics.jsonl, checkpoints/, reference_logps.safetensors, model/, results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from ..data.chat import IGNORE, collate_pairs
from ..errors import TinyLMError
from ..io import atomic_file, read_json, write_json
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .loop import Task, seed_everything, start_run
from .loop import train as train_loop
from .reward import load_pairs, pair_batches, pair_run_results, split_files


def answer_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ log π(answer tokens) of each row of a collated batch: the tokens whose label is not IGNORE."""
    logits = model(batch["input_ids"], batch["attention_mask"]).float()
    labels = batch["labels"]
    logp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return (logp * (labels != IGNORE)).sum(-1)


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
def evaluate_pairs(
    model: nn.Module, pairs: list, ref: torch.Tensor, pad_id: int, beta: float, batch_size: int = 32
) -> dict[str, float]:
    """Held-out DPO loss ("val_loss") and implicit-reward metrics, weighted by pairs."""
    policy = pair_logprobs(model, pairs, pad_id, batch_size)
    loss, metrics = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta)
    return {"val_loss": float(loss), **metrics}


def _reference(path: Path, model: nn.Module, splits: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """The stored reference log-probabilities of every split, computed and written first if absent."""
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


def dpo(
    data: str,
    model: str,
    out: str,
    beta: float = 0.1,
    eval_data: str | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Align a model on preference pairs with DPO (reference log-probabilities precomputed once).

    Args:
        data: Preference JSONL ({"prompt", "chosen", "rejected"}), or a directory with train.jsonl and test.jsonl.
        model: Checkpoint to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        beta: Strength β of the implicit KL constraint: larger keeps the policy closer to the reference.
        eval_data: Held-out preference JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        train: Optimizer, schedule and budget (train.batch_size counts pairs).
        context: Longest pair side in tokens (default: the model's max_seq_len); longer pairs are dropped.
        limit: Use only the first this many training pairs.
        eval_limit: Evaluate on only the first this many held-out pairs.
        overwrite: Replace an output directory that holds a different run.
    """
    if beta <= 0:
        raise TinyLMError(f"beta must be positive, got {beta}")
    train = train or TrainConfig()
    policy, tokenizer_dir = load_checkpoint(model)
    tok = Tokenizer.load(tokenizer_dir)
    context = context or policy.config.max_seq_len
    train_file, eval_file = split_files(data, eval_data)
    pairs = load_pairs(train_file, tok, context, limit)
    held_out = load_pairs(eval_file, tok, context, eval_limit) if eval_file else []
    run_config = {
        "data": str(train_file),
        "eval_data": str(eval_file) if eval_file else None,
        "model": str(model),
        "beta": beta,
        "context": context,
        "limit": limit,
        "eval_limit": eval_limit,
        "train": train,
    }
    d, device, out_dir = start_run(out, run_config, train, overwrite)
    ref = _reference(
        out_dir / "reference_logps.safetensors",
        policy.to(device),
        {"train": pairs, "eval": held_out},
        tok.pad_id,
    )
    seed_everything(train.seed)
    batches = pair_batches(pairs, train.batch_size, train.seed, tok.pad_id)

    def batch(index: int) -> dict[str, torch.Tensor]:
        b = batches(index)
        return {**b, "ref": ref["train"][b.pop("rows")]}

    def loss(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = answer_logprobs(m, b).chunk(2)
        return dpo_loss(chosen, rejected, b["ref"][:, 0], b["ref"][:, 1], beta)

    n_eval = train.eval_batches * train.batch_size

    def evaluate(m: nn.Module) -> dict[str, float]:
        return evaluate_pairs(m, held_out[:n_eval], ref["eval"][:n_eval], tok.pad_id, beta)

    task = Task(batch=batch, loss=loss, evaluate=evaluate if held_out and train.eval_batches else None)
    result = train_loop(policy, task, train, out_dir, run_config, desc="dpo")
    if result.interrupted:
        raise KeyboardInterrupt
    if not d.is_main:
        return {"step": result.step}
    policy.eval()
    save_checkpoint(policy, out_dir / "model", tokenizer_dir)
    results = pair_run_results(
        result,
        len(pairs),
        held_out,
        lambda: evaluate_pairs(policy, held_out, ref["eval"], tok.pad_id, beta),
        "dpo",
        "reward_accuracy",
    )
    write_json(out_dir / "results.json", results)
    return results


def summarize(out: str) -> str:
    """Markdown for a pipeline report: steps, time and held-out implicit-reward accuracy of a DPO run."""
    r = read_json(Path(out) / "results.json")
    text = f"{r['step']:,} steps on {r['train_pairs']:,} pairs in {r['train_seconds']:.0f} s"
    if "heldout_reward_accuracy" in r:
        text += (
            f"; held-out implicit-reward accuracy {r['heldout_reward_accuracy']:.4f}, "
            f"margin {r['heldout_reward_margin']:.3f}"
        )
    return text
