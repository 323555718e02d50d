"""What a task is: rows built from a corpus, the reward that checks an answer, and how it is evaluated.

A task module defines `TASK = Task(...)` and is registered by one line in `tinylm.tasks.TASKS`. Its rows are
`(split key, row)` pairs: the split is by a stable hash of the key (a poem's title, a verse's reference, a
review's text), never by position or seed, so the same item always lands on the same side whatever the
seed, the limit or the task, and held-out rows never leak into training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import TinyLMError

TEST_FRACTION = 0.1
Rows = Iterator[tuple[str, dict[str, Any]]]  # (split key, row)


@dataclass(frozen=True)
class Task:
    """One task: where its rows come from, and what scores an answer to them."""

    name: str
    summary: str
    rows: Callable[[str | None, random.Random], Rows]
    """(source, seeded rng) -> (split key, row) pairs."""
    source: str | None = None
    """The corpus read by default; None with `needs_source` False: the task is synthetic."""
    needs_source: bool = False
    """The corpus is not embedded in the package, so `--source PATH` must name it."""
    example_source: str | None = None
    """Where shared/data holds a source for it (shown in the error when one is needed)."""
    reward: str | None = None
    """The reward (a `tinylm.tasks.rewards.REWARDS` name) that scores an answer to a row: what RL maximises."""
    metrics: tuple[str, ...] = ()
    """Further rewards reported beside it when the task is evaluated (e.g. exact_form)."""
    labels: str | None = None
    """The row field that holds a class label, for evaluating by label log-likelihood."""


def is_test(key: str) -> bool:
    """Whether the source item `key` belongs to the held-out split (about TEST_FRACTION of all keys)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION


def records(source: str, fields: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for every JSONL record of `source` (an embedded name, a path or a glob); a record
    that is not a JSON object or lacks one of `fields` is an error naming its line."""
    from ..data.jsonl import jsonl_rows
    from ..data.readers import file_kind, resolve_source

    for path in resolve_source(source):
        if file_kind(path) != "jsonl":
            raise TinyLMError(f"{path}: expected a JSONL file with fields {', '.join(fields)}")
        yield from jsonl_rows(path, fields, allow_empty=True)
