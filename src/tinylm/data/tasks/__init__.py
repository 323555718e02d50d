"""Task data built from real corpora, for instruction tuning and alignment: `tinylm data make TASK`.

Every task writes `train.jsonl`, `test.jsonl` and `manifest.json` into one directory. The split is by a
stable hash of each row's *source item* (a poem's title, a verse's reference, a review's text), never by
position or seed: the same item always lands on the same side, whatever the seed, the limit or the task,
so a held-out title of `poems` is held out of `preferences` too and test rows never leak into training.
The seed only chooses among equally honest variants (a corruption, a word problem's numbers) and the order
of the rows; a limit keeps the first rows of that seeded order, a random sample.

| task          | rows                                                                      | default source |
|---------------|---------------------------------------------------------------------------|----------------|
| poems         | "写一首五言绝句，题为《X》。" -> a real Tang quatrain of that form and title | tang           |
| preferences   | the same prompt, chosen = the real poem, rejected = it corrupted in form or rhyme | tang   |
| sentiment-zh  | a Chinese review -> 正面 / 负面                                              | (a path)       |
| sentiment-en  | a tweet -> positive / negative / neutral                                  | (a path)       |
| kjv           | continue a King James verse from its reference and opening, or quote it   | kjv            |
| arithmetic    | an English word problem -> worked steps and the answer (with `answer`)    | (synthetic)    |
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...errors import TinyLMError
from ...io import atomic_dir, read_json, write_json
from ..corpora import CORPORA

TEST_FRACTION = 0.1
_EXAMPLE_SOURCES = {"sentiment-zh": "zh/review_sentiment.jsonl", "sentiment-en": "en/tweet_sentiment.jsonl"}
Rows = Iterator[tuple[str, dict[str, Any]]]  # (split key, row)


def is_test(key: str) -> bool:
    """Whether the source item `key` belongs to the held-out split (about TEST_FRACTION of all keys)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION


def records(source: str, fields: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for every JSONL record of `source` (a name, path or glob; .xz / .gz read on
    the fly); a record that is not a JSON object or lacks one of `fields` is an error naming its line."""
    from ..readers import file_kind, resolve_source

    for path in resolve_source(source):
        if file_kind(path) != "jsonl":
            raise TinyLMError(f"{path}: expected a JSONL file with fields {', '.join(fields)}")
        with {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(raw.decode("utf-8", errors="replace"))
                except ValueError as e:
                    raise TinyLMError(f"{where}: not valid JSON ({e})") from None
                if not isinstance(record, dict):
                    raise TinyLMError(f"{where}: expected a JSON object")
                missing = [n for n in fields if n not in record]
                if missing:
                    raise TinyLMError(f"{where}: missing field {missing[0]!r}; expected {', '.join(fields)}")
                yield where, record


def _generators() -> dict[str, tuple[Callable[[str, random.Random], Rows], str | None]]:
    """task -> (row generator, default source); a None default means the task reads no corpus or needs a path."""
    from . import arithmetic, kjv, poems, preferences, sentiment

    return {
        "poems": (poems.rows, "tang"),
        "preferences": (preferences.rows, "tang"),
        "sentiment-zh": (sentiment.review_rows, None),
        "sentiment-en": (sentiment.tweet_rows, None),
        "kjv": (kjv.rows, "kjv"),
        "arithmetic": (arithmetic.rows, None),
    }


def make_splits(
    task: str, source: str | None = None, seed: int = 0, limit: int | None = None
) -> dict[str, list]:
    """The rows of `task` as {"train": [...], "test": [...]} (see the module docstring)."""
    generators = _generators()
    if task not in generators:
        raise TinyLMError(f"unknown task {task!r}; expected one of {', '.join(generators)}")
    if limit is not None and limit < 1:
        raise TinyLMError(f"limit must be at least 1, not {limit}")
    generate, default = generators[task]
    if task == "arithmetic":
        if source is not None:
            raise TinyLMError("arithmetic problems are synthetic; the task reads no --source")
    elif (source or default) is None:
        raise TinyLMError(f"task {task} needs --source PATH (e.g. shared/data/{_EXAMPLE_SOURCES[task]})")
    splits: dict[str, list] = {"train": [], "test": []}
    for key, row in generate(source or default, random.Random(f"{task}:{seed}")):
        splits["test" if is_test(key) else "train"].append(row)
    if not splits["train"] and not splits["test"]:
        raise TinyLMError(f"task {task}: {source or default} yields no rows")
    order = random.Random(seed)
    for name, rows in splits.items():
        order.shuffle(rows)
        splits[name] = rows[:limit]
    return splits


OUTPUTS = ("train.jsonl", "test.jsonl", "manifest.json")
"""What `make_task` writes: its output directory holds these and nothing else."""


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
    source = source or _generators()[task][1]
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
