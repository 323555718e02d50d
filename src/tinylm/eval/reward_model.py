"""A trained reward model judged (pairwise accuracy) and used (a scorer of conversations: PPO's reward, and
`tinylm reward score`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.chat import Counts, Messages, collate, encode_conversation, load_prompts, to_example
from ..data.preferences import collate_pairs, load_pairs
from ..errors import TinyLMError
from ..io import atomic_file
from ..models.heads import RewardModel, load_reward_model
from ..tokenizer import Tokenizer


def pair_scores(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A reward model's scores of the chosen half and the rejected half of a pair batch."""
    return model(batch["input_ids"], batch["attention_mask"]).chunk(2)


@torch.no_grad()
def pairwise_accuracy(model: nn.Module, pairs: list, pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """Share of pairs whose chosen answer the reward model scores higher, mean margin and mean loss."""
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


class RewardScorer:
    """Conversations in, one number each (higher is better): the last assistant turn of each conversation
    is judged, rendered exactly as in training."""

    def __init__(self, model: RewardModel, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> RewardScorer:
        return cls(load_reward_model(path, device), Tokenizer.load(path))

    @property
    def context(self) -> int:
        return self.model.body.config.max_seq_len

    @torch.no_grad()
    def score(self, conversations: list[Messages]) -> list[float]:
        device = next(self.model.parameters()).device
        examples = []
        for conv in conversations:
            ids, mask = encode_conversation(conv, self.tokenizer, train_from=len(conv) - 1)
            tail = slice(-(self.context + 1), None)
            examples.append(to_example(ids[tail], mask[tail], self.context, "truncate", Counts()))
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
        pairs = load_pairs(Path(data), scorer.tokenizer, scorer.context)
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
