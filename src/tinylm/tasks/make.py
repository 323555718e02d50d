"""`tinylm data make TASK`: a task's rows split into train.jsonl and test.jsonl, with a manifest.

The split follows each row's split key (see `tinylm.tasks.base`). The seed only chooses among equally
honest variants (a corruption, a word problem's numbers) and the order of the rows; a limit keeps the
first rows of that seeded order, a random sample.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..data.corpora import CORPORA
from ..errors import TinyLMError
from ..io import atomic_dir, read_json, write_json
from . import get_task
from .base import TEST_FRACTION, is_test

OUTPUTS = ("train.jsonl", "test.jsonl", "manifest.json")
"""What `make_task` writes: its output directory holds these and nothing else."""


def make_splits(
    task: str, source: str | None = None, seed: int = 0, limit: int | None = None
) -> dict[str, list]:
    """The rows of `task` as {"train": [...], "test": [...]}."""
    spec = get_task(task)
    if limit is not None and limit < 1:
        raise TinyLMError(f"limit must be at least 1, not {limit}")
    if spec.source is None and not spec.needs_source and source is not None:
        raise TinyLMError(f"{spec.name} rows are synthetic; the task reads no --source")
    if spec.needs_source and source is None:
        raise TinyLMError(f"task {spec.name} needs --source PATH (e.g. shared/data/{spec.example_source})")
    source = source or spec.source
    splits: dict[str, list] = {"train": [], "test": []}
    for key, row in spec.rows(source, random.Random(f"{spec.name}:{seed}")):
        splits["test" if is_test(key) else "train"].append(row)
    if not splits["train"] and not splits["test"]:
        raise TinyLMError(f"task {spec.name}: {source} yields no rows")
    order = random.Random(seed)
    for name, rows in splits.items():
        order.shuffle(rows)
        splits[name] = rows[:limit]
    return splits


def write_splits(out_dir: str | Path, splits: dict[str, list[dict]], manifest: dict[str, Any]) -> None:
    """OUT_DIR/<split>.jsonl for each split plus OUT_DIR/manifest.json, replacing OUT_DIR in one atomic step
    (an error midway leaves the old directory, or none, never a half-written one)."""
    with atomic_dir(out_dir) as tmp:
        for name, rows in splits.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_json(tmp / "manifest.json", manifest)


def make_task(
    task: str, out: str | None = None, source: str | None = None, seed: int = 0, limit: int | None = None
) -> dict[str, int]:
    """Build task data from real corpora (poems, preferences, sentiment-zh, sentiment-en, kjv, arithmetic).

    Writes OUT/train.jsonl, OUT/test.jsonl (held-out items, split by a stable hash of each source item)
    and OUT/manifest.json, and prints the counts.

    Args:
        task: One of poems, preferences, sentiment-zh, sentiment-en, kjv, arithmetic.
        out: Output directory (default data/TASK).
        source: Corpus to read: an embedded name or a JSONL path. Default tang for poems and preferences,
            kjv for kjv; sentiment-zh and sentiment-en need a path (e.g. shared/data/zh/review_sentiment.jsonl).
        seed: Chooses corruptions, problem numbers and row order; never the split.
        limit: Keep at most this many rows in each split.
    """
    splits = make_splits(task, source, seed, limit)
    out_dir = Path(out or f"data/{task}")
    if out_dir.exists() and not out_dir.is_dir():
        raise TinyLMError(f"--out {out} is a file; give a directory for train.jsonl and test.jsonl")
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUTS) if out_dir.is_dir() else []
    if others:  # the directory is replaced as a whole, so it must hold nothing but an earlier task's files
        raise TinyLMError(f"--out {out_dir} holds other files ({', '.join(others[:3])}); choose another")
    counts = {name: len(rows) for name, rows in splits.items()}
    source = source or get_task(task).source
    corpus = CORPORA.get(source) if source else None
    manifest = {"task": task, "source": source, "seed": seed, "limit": limit, "test_fraction": TEST_FRACTION}
    if corpus:
        manifest["licence"] = f"{corpus.licence}; {corpus.origin}"
    write_splits(out_dir, splits, {**manifest, "rows": counts})
    print(f"{task}: {counts['train']:,} train, {counts['test']:,} test -> {out_dir}")
    return counts


def summarize(out: str) -> str:
    """One line on a task-data directory, for the pipeline's report."""
    m = read_json(Path(out) / "manifest.json")
    source = f" from `{m['source']}`" if m["source"] else ""
    return f"Task `{m['task']}`{source}: {m['rows']['train']:,} training and {m['rows']['test']:,} held-out rows."
