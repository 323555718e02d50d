"""Where a stage's training and held-out rows are: a JSONL file, or a task directory with train.jsonl and
test.jsonl (as `tinylm data make` writes it)."""

from __future__ import annotations

from pathlib import Path

from ..errors import TinyLMError


def split_files(data: str | Path, test: str | Path | None = None) -> tuple[Path, Path | None]:
    """(training file, held-out file or None): DATA itself, or DATA/train.jsonl with DATA/test.jsonl as the
    default held-out file; `test` names another held-out file."""
    path = Path(data)
    held_out = Path(test) if test else None
    if not path.is_dir():
        return path, held_out
    train = path / "train.jsonl"
    if not train.is_file():
        raise TinyLMError(f"{path} holds no train.jsonl (make one with `tinylm data make`)")
    if held_out is None and (path / "test.jsonl").is_file():
        held_out = path / "test.jsonl"
    return train, held_out
