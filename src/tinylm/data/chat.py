"""Chat and preference data for fine-tuning and alignment: load, validate, tokenize with a loss mask, batch.

Files are JSONL in the shapes Hugging Face TRL reads:

- SFT: `{"messages": [{"role", "content"}, ...]}`, or `{"prompt", "completion"}` where each is a string (a
  user turn and an assistant turn) or a list of messages;
- preferences: `{"prompt", "chosen", "rejected"}` (see `tinylm.data.preferences`);
- prompts for RL (GRPO / PPO): any of the above; the prompt is what precedes the last assistant turn.

A conversation is rendered with the tokenizer's own chat template, so training sees exactly the text that
generation will see. Only the assistant's turns are learned: the loss mask covers each assistant content and
the end-of-turn token that closes it (`<|im_end|>` in ChatML), never a role header. The mask is exact because
the text is tokenized piece by piece at turn boundaries, the same cut generation makes (the prompt is
encoded, then the answer is produced token by token); message contents are tokenized with special-token
strings read as plain text, so data cannot inject control tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TinyLMError
from .jsonl import jsonl_rows

ROLES = ("system", "user", "assistant", "tool")
IGNORE = -100  # label of a position that carries no loss (cross_entropy's default ignore_index)
_PROBE = "\x00tinylm-content\x00"  # stands in for a message's content to find where the template puts it

Messages = list[dict[str, str]]


@dataclass
class Example:
    """One tokenized sequence, already shifted: `labels[t]` is the target after `input_ids[t]`, or IGNORE."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class Counts:
    """What happened to the rows of a file, for the run's log: kept, truncated, and dropped by reason."""

    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_identical: int = 0


@dataclass
class Prompt:
    """A prompt for RL: the conversation before the last assistant turn, that turn (the reference answer, if
    any) and the row's other fields (e.g. `answer`, `form`), which reward functions read."""

    messages: Messages
    reference: str | None
    fields: dict[str, Any] = field(default_factory=dict)


def messages_field(value: Any, where: str, name: str, default_role: str) -> Messages:
    """A string or a list of {role, content} objects, checked, as a list of messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise TinyLMError(f"{where}: field {name!r} must be a string or a non-empty list of messages")
    out = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise TinyLMError(
                f"{where}: {name} message {i} must be an object with a 'role' and a string 'content'"
            )
        if m["role"] not in ROLES:
            raise TinyLMError(
                f"{where}: unknown role {m['role']!r} in {name} message {i}; expected one of {', '.join(ROLES)}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def require_fields(row: dict[str, Any], where: str, names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in row]
    if missing:
        raise TinyLMError(
            f"{where}: missing field {missing[0]!r}; expected {', '.join(names)} (the row has {', '.join(row) or 'no fields'})"
        )


def _conversation(row: dict[str, Any], where: str) -> Messages:
    if "messages" in row:
        messages = messages_field(row["messages"], where, "messages", "user")
    elif "prompt" in row or "completion" in row:
        require_fields(row, where, ("prompt", "completion"))
        messages = messages_field(row["prompt"], where, "prompt", "user")
        messages += messages_field(row["completion"], where, "completion", "assistant")
    else:
        raise TinyLMError(
            f"{where}: expected a 'messages' list or 'prompt' and 'completion' fields (the row has {', '.join(row) or 'no fields'})"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise TinyLMError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    return messages


def load_conversations(path: str | Path) -> list[Messages]:
    """The conversations of an SFT JSONL file, each checked; any bad row stops the load with its file:line."""
    return [_conversation(row, where) for where, row in jsonl_rows(path)]


def load_prompts(path: str | Path) -> list[Prompt]:
    """Prompts for RL from a JSONL file of conversations, prompt / completion rows or prompt-only rows."""
    return [to_prompt(row, where) for where, row in jsonl_rows(path)]


def to_prompt(row: dict[str, Any], where: str) -> Prompt:
    """The prompt of one row (`where` names it in errors): everything before its last assistant turn (the
    whole conversation if it has none); fields other than messages / prompt / completion are kept for the
    reward function."""
    if "messages" not in row:
        require_fields(row, where, ("prompt",))
    messages = messages_field(
        row["messages"] if "messages" in row else row["prompt"], where, "prompt", "user"
    )
    if "completion" in row:
        messages += messages_field(row["completion"], where, "completion", "assistant")
    reference = None
    if messages[-1]["role"] == "assistant":
        reference = messages.pop()["content"]
    if not messages:
        raise TinyLMError(f"{where}: the prompt is empty")
    rest = {k: v for k, v in row.items() if k not in ("messages", "prompt", "completion")}
    return Prompt(messages, reference, rest)


def encode_conversation(messages: Messages, tokenizer, train_from: int = 0) -> tuple[list[int], list[bool]]:
    """Token ids of a rendered conversation and, per token, whether it is learned.

    Learned tokens are those of each assistant message at index >= `train_from` (content and end-of-turn
    token). Each message is rendered once more with a probe in place of its content, which shows where the
    template puts the header before the content and the end-of-turn after it; the end-of-turn is learned up
    to its trailing whitespace. A template that does not reproduce contents verbatim is an error.
    """
    pieces: list[tuple[str, bool, bool]] = []  # (text, is_content, learned)
    done = ""
    for i, message in enumerate(messages):
        probe = tokenizer.apply_chat_template([*messages[:i], {**message, "content": _PROBE}])
        text = tokenizer.apply_chat_template(messages[: i + 1])
        head, _, tail = probe.partition(_PROBE)
        if not head.startswith(done) or text != head + message["content"] + tail:
            raise TinyLMError("the chat template does not render message contents verbatim, turn by turn")
        learn = message["role"] == "assistant" and i >= train_from
        end = tail.rstrip()
        pieces += [(head[len(done) :], False, False), (message["content"], True, learn)]
        pieces += [(end, False, learn), (tail[len(end) :], False, False)]
        done = text
    ids: list[int] = []
    mask: list[bool] = []
    for text, is_content, learn in pieces:
        if text:
            piece = tokenizer.encode(text, special=not is_content)
            ids += piece
            mask += [learn] * len(piece)
    return ids, mask


def to_example(
    ids: list[int], mask: list[bool], context: int, overflow: str, counts: Counts
) -> Example | None:
    """Shift into (input, label) pairs and fit `context` positions: `overflow` "truncate" keeps the first
    `context` (if any label survives), "drop" drops the example. Updates `counts`; None if dropped."""
    if overflow not in ("truncate", "drop"):
        raise TinyLMError(f"overflow must be 'truncate' or 'drop', not {overflow!r}")
    if len(ids) - 1 > context:
        if overflow == "drop" or not any(mask[1 : context + 1]):
            counts.dropped_too_long += 1
            return None
        ids, mask = ids[: context + 1], mask[: context + 1]
        counts.truncated += 1
    counts.kept += 1
    return Example(ids[:-1], [t if m else IGNORE for t, m in zip(ids[1:], mask[1:], strict=True)])


def encode_sft(
    conversations: list[Messages], tokenizer, context: int, overflow: str = "truncate"
) -> tuple[list[Example], Counts]:
    """Tokenized SFT examples (loss on every assistant turn) and what happened to the long ones."""
    counts = Counts()
    examples = [
        to_example(*encode_conversation(c, tokenizer), context, overflow, counts) for c in conversations
    ]
    return [e for e in examples if e is not None], counts


def encode_prompt(messages: Messages, tokenizer) -> list[int]:
    """Token ids of a prompt followed by the opening of the assistant's turn, ready for generation: exactly
    the tokens that precede the answer in training (contents encoded as text, as `encode_conversation` does)."""
    ids, _ = encode_conversation(messages, tokenizer)
    text = tokenizer.apply_chat_template(messages)
    opening = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not opening.startswith(text):
        raise TinyLMError("the chat template's generation prompt does not extend the rendered conversation")
    return ids + tokenizer.encode(opening[len(text) :])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded int64 tensors (B, T): input_ids, labels (IGNORE on padding) and attention_mask (1 real,
    0 padding). Position ids follow from the attention mask in the model, so they are not returned."""
    T = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
