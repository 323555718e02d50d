"""The one JSONL reader: every JSONL file tinylm reads goes through `jsonl_rows`, so every bad line is
reported the same way, as `file:line` and what was expected.

Files ending in `.xz` or `.gz` are decompressed on the fly. Invalid UTF-8 is replaced by U+FFFD and counted
in a warning; blank lines are skipped.
"""

from __future__ import annotations

import gzip
import json
import lzma
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from ..errors import TinyLMError

COMPRESSED = {".xz": lzma.open, ".gz": gzip.open}


def warn(message: str) -> None:
    """Print a warning on stderr without breaking an active progress bar."""
    tqdm.write(f"tinylm: warning: {message}", file=sys.stderr)


def open_binary(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes, decompressed on the fly when it ends in .xz or .gz."""
    return COMPRESSED.get(path.suffix, open)(path, "rb")


def decode(raw: bytes) -> tuple[str, int]:
    """UTF-8 text and the number of invalid byte sequences that were replaced by U+FFFD."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def warn_invalid(path: Path, count: int) -> None:
    if count:
        warn(f"{path}: {count} invalid UTF-8 byte sequence(s) replaced by U+FFFD")


def jsonl_rows(
    path: str | Path,
    fields: tuple[str, ...] = (),
    skip_bad_lines: bool = False,
    allow_empty: bool = False,
    hint: str = "",
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, object) for each non-blank line of a JSONL file.

    A line that is not a JSON object, or lacks one of `fields`, stops the read with its file and line; with
    `skip_bad_lines` a line that is not an object is skipped and counted in a warning at the end instead. A
    file without a single row is an error unless `allow_empty`. `hint` ends the message of a bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"{path}: no such file")
    invalid = skipped = rows = 0
    first_skipped = None
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            line, bad = decode(raw)
            invalid += bad
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:
                if not skip_bad_lines:
                    raise TinyLMError(f"{where}: not a JSON object ({e}){hint}") from None
                skipped += 1
                first_skipped = first_skipped or lineno
                continue
            missing = [n for n in fields if n not in row]
            if missing:
                raise TinyLMError(
                    f"{where}: missing field {missing[0]!r}; expected {', '.join(fields)} "
                    f"(the row has {', '.join(row) or 'no fields'})"
                )
            rows += 1
            yield where, row
    warn_invalid(path, invalid)
    if skipped:
        warn(f"{path}: skipped {skipped} line(s) that are not JSON objects (first at line {first_skipped})")
    if not rows and not allow_empty:
        raise TinyLMError(f"{path}: no rows")
