"""Prompts ready for sampling: RL rollouts, evaluation by reward, judging answers.

Each row of a prompt file (see `chat.load_prompts`) becomes its token ids, ending where the assistant's
answer begins, exactly as SFT renders it; its conversation (a learned reward model reads it); and its other
fields (a reward function reads them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import TinyLMError
from .chat import Messages, Prompt, encode_prompt, load_prompts


@dataclass
class EncodedPrompt:
    """A prompt's token ids, its conversation and the row's other fields."""

    ids: list[int]
    messages: Messages
    fields: dict[str, Any]
    where: str
    """The row it came from ("file row N"), for errors about its fields."""


def encode_prompts(path: str | Path, tokenizer, context: int, max_new_tokens: int) -> list[EncodedPrompt]:
    """The prompts of a JSONL file, encoded; those that leave no room for `max_new_tokens` are dropped (and
    reported)."""
    rows = ((f"{path} row {i}", p) for i, p in enumerate(load_prompts(path), 1))
    return fit_prompts(rows, tokenizer, context, max_new_tokens, str(path))


def fit_prompts(
    prompts: Iterable[tuple[str, Prompt]],
    tokenizer,
    context: int,
    room: int,
    source: str,
    limit: int | None = None,
) -> list[EncodedPrompt]:
    """(where, prompt) pairs encoded, up to `limit` of them; those that leave no `room` tokens in the
    `context` are dropped, and counted in a message naming `source`."""
    out, too_long = [], 0
    for where, p in prompts:
        if limit is not None and len(out) >= limit:
            break
        ids = encode_prompt(p.messages, tokenizer)
        if len(ids) + room > context:
            too_long += 1
            continue
        out.append(EncodedPrompt(ids, p.messages, p.fields, where))
    if too_long:
        print(f"{source}: dropped {too_long} prompts longer than context {context} - {room} new tokens")
    if not out:
        raise TinyLMError(f"{source}: no prompt fits context {context} with {room} new tokens")
    return out


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt + completion rows, right-padded: input_ids, attention_mask (B, T), and action_mask (B, T-1),
    true where the next token (the one position t predicts) is a completion token."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    T = max(map(len, rows))
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    action_mask = torch.zeros((len(rows), T - 1), dtype=torch.bool)
    for i, (p, row) in enumerate(zip(prompts, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        action_mask[i, len(p) - 1 : len(row) - 1] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "action_mask": action_mask}
