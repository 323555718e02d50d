"""Preference pairs for reward models and DPO: `{"prompt", "chosen", "rejected"}` rows, each a string or a list
of messages (chosen / rejected hold the assistant's answer), encoded so that only the answers are scored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TinyLMError
from .batching import LengthBatches
from .chat import (
    Counts,
    Example,
    Messages,
    collate,
    encode_conversation,
    messages_field,
    require_fields,
    to_example,
)
from .jsonl import jsonl_rows
from .splits import split_files


@dataclass
class Preference:
    """One preference pair: a prompt conversation and two alternative assistant continuations."""

    prompt: Messages
    chosen: Messages
    rejected: Messages


def load_preferences(path: str | Path) -> tuple[list[Preference], Counts]:
    """Preference pairs of a JSONL file; pairs whose chosen equals rejected teach nothing and are dropped
    (counted in `Counts.dropped_identical`). A missing field stops the load with its file:line."""
    pairs, counts = [], Counts()
    for where, row in jsonl_rows(path):
        require_fields(row, where, ("prompt", "chosen", "rejected"))
        prompt = messages_field(row["prompt"], where, "prompt", "user")
        chosen = messages_field(row["chosen"], where, "chosen", "assistant")
        rejected = messages_field(row["rejected"], where, "rejected", "assistant")
        for name, answer in (("chosen", chosen), ("rejected", rejected)):
            if not any(m["role"] == "assistant" for m in answer):
                raise TinyLMError(f"{where}: {name} has no assistant turn")
        if chosen == rejected:
            counts.dropped_identical += 1
            continue
        pairs.append(Preference(prompt, chosen, rejected))
        counts.kept += 1
    return pairs, counts


def encode_preferences(
    pairs: list[Preference], tokenizer, context: int, overflow: str = "drop"
) -> tuple[list[tuple[Example, Example]], Counts]:
    """(chosen, rejected) examples whose labels cover only the answer, the tokens DPO and the reward model
    score. By default a pair is dropped if either side does not fit, since truncating an answer changes what
    is judged; with overflow="truncate" a pair with a truncated side counts as truncated."""
    counts, out = Counts(), []
    for p in pairs:
        side_counts = Counts()
        sides = [
            to_example(
                *encode_conversation(p.prompt + answer, tokenizer, len(p.prompt)),
                context,
                overflow,
                side_counts,
            )
            for answer in (p.chosen, p.rejected)
        ]
        if sides[0] is None or sides[1] is None:
            counts.dropped_too_long += 1
            continue
        counts.kept += 1
        counts.truncated += side_counts.truncated > 0
        out.append((sides[0], sides[1]))
    return out, counts


def collate_pairs(pairs: list[tuple[Example, Example]], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B chosen sequences first, then the B rejected ones (one forward pass)."""
    return collate([c for c, _ in pairs] + [r for _, r in pairs], pad_id)


def load_pairs(
    path: Path, tokenizer, context: int, limit: int | None = None
) -> list[tuple[Example, Example]]:
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


def pair_batches(pairs: list, batch_size: int, seed: int, pad_id: int) -> LengthBatches:
    """index -> a collated batch of pairs of similar lengths, with the pairs' indices as "rows"."""
    lengths = [max(len(c.input_ids), len(r.input_ids)) for c, r in pairs]

    def make(rows: list[int]) -> dict[str, torch.Tensor]:
        return {**collate_pairs([pairs[j] for j in rows], pad_id), "rows": torch.tensor(rows)}

    return LengthBatches(lengths, batch_size, seed, make)


@dataclass
class PairSplits:
    """A preference run's data: where it came from, and its training and held-out pairs, encoded."""

    train_file: Path
    test_file: Path | None
    train: list[tuple[Example, Example]]
    test: list[tuple[Example, Example]]


def load_pair_splits(
    data: str, test: str | None, tokenizer, context: int, limit: int | None, test_limit: int | None
) -> PairSplits:
    """The pairs of DATA (a file, or a task directory's train.jsonl with its test.jsonl held out)."""
    train_file, test_file = split_files(data, test)
    held_out = load_pairs(test_file, tokenizer, context, test_limit) if test_file else []
    return PairSplits(train_file, test_file, load_pairs(train_file, tokenizer, context, limit), held_out)
