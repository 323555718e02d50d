"""`tinylm reward train` and `tinylm reward score`: a reward model learned from preference pairs.

The model is the language model's body with a scalar head read at the last token of the conversation
(`tinylm.model.heads.RewardModel`), trained with the Bradley–Terry pairwise loss

    loss = −log σ(r(prompt, chosen) − r(prompt, rejected))

so that r ranks the preferred answer higher. What it is worth is its pairwise accuracy on held-out pairs
(prompts never seen in training), reported at every evaluation and in `results.json`. `RewardScorer` is the
same model as a Python scorer of conversations, which PPO uses as its reward and `tinylm reward score` exposes.

Run directory: config.yaml, metrics.jsonl, checkpoints/, model/ (body checkpoint + reward_head.safetensors
+ tokenizer), results.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.chat import (
    Counts,
    Messages,
    collate,
    collate_pairs,
    encode_conversation,
    encode_preferences,
    length_batches,
    load_preferences,
    load_prompts,
    to_example,
)
from ..errors import TinyLMError
from ..io import atomic_file, read_json, write_json
from ..model.checkpoint import load_checkpoint
from ..model.heads import RewardModel, load_reward_model, save_reward_model
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .loop import Task, TrainResult, seed_everything, start_run
from .loop import train as train_loop


def split_files(data: str, eval_data: str | None) -> tuple[Path, Path | None]:
    """Training and held-out files: `data` is a JSONL file or a directory with train.jsonl (and test.jsonl,
    the default held-out file)."""
    path = Path(data)
    if path.is_dir():
        held_out = path / "test.jsonl"
        return path / "train.jsonl", Path(eval_data) if eval_data else (
            held_out if held_out.is_file() else None
        )
    return path, Path(eval_data) if eval_data else None


def load_pairs(path: Path, tokenizer: Tokenizer, context: int, limit: int | None = None) -> list:
    """Encoded (chosen, rejected) pairs of a preference file, with what was dropped printed."""
    pairs, counts = load_preferences(path)
    encoded, fit = encode_preferences(pairs[:limit], tokenizer, context)
    print(
        f"{path}: {len(encoded)} pairs; dropped {counts.dropped_identical} with identical chosen and "
        f"rejected, {fit.dropped_too_long} longer than context {context}"
    )
    if not encoded:
        raise TinyLMError(f"{path}: no usable preference pairs")
    return encoded


def pair_batches(pairs: list, batch_size: int, seed: int, pad_id: int):
    """index -> collated batch of pairs, epoch after epoch, batches of similar lengths (pure in the index)."""
    lengths = [max(len(c.input_ids), len(r.input_ids)) for c, r in pairs]
    per_epoch = len(length_batches(lengths, batch_size, seed))

    def batch(index: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(index, per_epoch)
        rows = length_batches(lengths, batch_size, seed, epoch)[i]
        return {**collate_pairs([pairs[j] for j in rows], pad_id), "rows": torch.tensor(rows)}

    return batch


def pair_run_results(
    result: TrainResult,
    n_pairs: int,
    held_out: list,
    score: Callable[[], dict[str, float]],
    stage: str,
    key: str,
) -> dict[str, Any]:
    """The results.json of a run trained on preference pairs: steps, time, pairs and, when there are held-out
    pairs, `score()`'s metrics prefixed `heldout_`, of which `key` is printed."""
    results: dict[str, Any] = {"step": result.step, "train_seconds": result.elapsed, "train_pairs": n_pairs}
    if held_out:
        scores = score()
        results.update({f"heldout_{k}": v for k, v in scores.items()})
        print(f"{stage}: held-out {key.replace('_', ' ')} {scores[key]:.4f} over {len(held_out)} pairs")
    return results


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean −log σ(r_c − r_r) over pairs, with the pairs' accuracy (r_c > r_r) and mean margin."""
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    margin = margin.detach()
    return loss, {"accuracy": float((margin > 0).float().mean()), "margin": float(margin.mean())}


def pair_scores(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen half and the rejected half of a collated pair batch."""
    scores = model(batch["input_ids"], batch["attention_mask"])
    return scores.chunk(2)


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, pairs: list, pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """Share of pairs whose chosen answer the model scores higher, mean margin and mean loss."""
    device = next(model.parameters()).device
    right = margin = loss = 0.0
    for i in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[i : i + batch_size], pad_id)
        c, r = pair_scores(model, {k: v.to(device) for k, v in batch.items()})
        right += float((c > r).sum())
        margin += float((c - r).sum())
        loss += float(-F.logsigmoid(c - r).sum())
    n = len(pairs)
    return {"accuracy": right / n, "margin": margin / n, "val_loss": loss / n, "pairs": n}


def reward_train(
    data: str,
    model: str,
    out: str,
    eval_data: str | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a reward model on preference pairs with the Bradley–Terry loss; report held-out pairwise accuracy.

    Args:
        data: Preference JSONL ({"prompt", "chosen", "rejected"}), or a directory with train.jsonl and test.jsonl.
        model: Checkpoint to start from (usually the SFT model); its body gets a new scalar head.
        out: Run directory; rerunning the same command resumes.
        eval_data: Held-out preference JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        train: Optimizer, schedule and budget (train.batch_size counts pairs).
        context: Longest pair side in tokens (default: the model's max_seq_len); longer pairs are dropped.
        limit: Use only the first this many training pairs.
        eval_limit: Evaluate on only the first this many held-out pairs.
        overwrite: Replace an output directory that holds a different run.
    """
    train = train or TrainConfig()
    body, tokenizer_dir = load_checkpoint(model)
    tok = Tokenizer.load(tokenizer_dir)
    context = context or body.config.max_seq_len
    train_file, eval_file = split_files(data, eval_data)
    pairs = load_pairs(train_file, tok, context, limit)
    held_out = load_pairs(eval_file, tok, context, eval_limit) if eval_file else []
    run_config = {
        "data": str(train_file),
        "eval_data": str(eval_file) if eval_file else None,
        "model": str(model),
        "tokenizer_hash": tok.hash,
        "context": context,
        "limit": limit,
        "eval_limit": eval_limit,
        "train": train,
    }
    d, _, out_dir = start_run(out, run_config, train, overwrite)
    seed_everything(train.seed)
    rm = RewardModel(body)

    def loss(m: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return bradley_terry_loss(*pair_scores(m, batch))

    def evaluate(m: nn.Module) -> dict[str, float]:
        return pairwise_accuracy(m, held_out[: train.eval_batches * train.batch_size], tok.pad_id)

    task = Task(
        batch=pair_batches(pairs, train.batch_size, train.seed, tok.pad_id),
        loss=loss,
        evaluate=evaluate if held_out and train.eval_batches else None,
    )
    result = train_loop(rm, task, train, out_dir, run_config, desc="reward")
    if result.interrupted:
        raise KeyboardInterrupt
    if not d.is_main:
        return {"step": result.step}
    rm.eval()
    save_reward_model(rm, out_dir / "model", tokenizer_dir)
    results = pair_run_results(
        result,
        len(pairs),
        held_out,
        lambda: pairwise_accuracy(rm, held_out, tok.pad_id),
        "reward",
        "accuracy",
    )
    write_json(out_dir / "results.json", results)
    return results


class RewardScorer:
    """A trained reward model as a scorer: conversations in, one number each (higher is better).

    The last assistant turn of each conversation is judged, rendered exactly as in training.
    """

    def __init__(self, model: RewardModel, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> RewardScorer:
        return cls(load_reward_model(path, device), Tokenizer.load(path))

    @torch.no_grad()
    def score(self, conversations: list[Messages]) -> list[float]:
        context, device = self.model.body.config.max_seq_len, next(self.model.parameters()).device
        examples = []
        for conv in conversations:
            ids, mask = encode_conversation(conv, self.tokenizer, train_from=len(conv) - 1)
            examples.append(
                to_example(ids[-(context + 1) :], mask[-(context + 1) :], context, "truncate", Counts())
            )
        out: list[float] = []
        for i in range(0, len(examples), self.batch_size):
            batch = collate(examples[i : i + self.batch_size], self.tokenizer.pad_id)
            out += self.model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).tolist()
        return out


def reward_score(model: str, data: str, out: str | None = None) -> dict[str, float]:
    """Score a JSONL file with a reward model: pairwise accuracy of preference rows, or each conversation's reward.

    Args:
        model: Reward model directory (the `model/` of a `tinylm reward train` run).
        data: Preference rows ({"prompt", "chosen", "rejected"}) or conversations ({"messages"} or
            {"prompt", "completion"}), whose last assistant turn is scored.
        out: Also write each conversation's score as JSONL {"score": x} here (conversations only).
    """
    scorer = RewardScorer.load(model)
    rows = load_prompts(data)
    if {"chosen", "rejected"} <= set(rows[0].fields):
        pairs = load_pairs(Path(data), scorer.tokenizer, scorer.model.body.config.max_seq_len)
        result = pairwise_accuracy(scorer.model, pairs, scorer.tokenizer.pad_id)
        print(
            f"pairwise accuracy {result['accuracy']:.4f}, mean margin {result['margin']:.4f} over {result['pairs']} pairs"
        )
        return result
    conversations = []
    for p in rows:
        if p.reference is None:
            raise TinyLMError(
                f"{data}: every row needs an assistant answer to score (a 'completion' or a last assistant message)"
            )
        conversations.append([*p.messages, {"role": "assistant", "content": p.reference}])
    scores = scorer.score(conversations)
    if out:
        with atomic_file(out) as f:
            f.writelines(json.dumps({"score": s}) + "\n" for s in scores)
    result = {"mean": sum(scores) / len(scores), "rows": len(scores)}
    print(f"mean reward {result['mean']:.4f} over {result['rows']} conversations")
    return result


def summarize(out: str) -> str:
    """Markdown for a pipeline report: steps, time and held-out pairwise accuracy of a reward-model run."""
    r = read_json(Path(out) / "results.json")
    text = f"{r['step']:,} steps on {r['train_pairs']:,} pairs in {r['train_seconds']:.0f} s"
    if "heldout_accuracy" in r:
        text += f"; held-out pairwise accuracy {r['heldout_accuracy']:.4f} over {r['heldout_pairs']:,} pairs"
    return text
