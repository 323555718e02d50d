"""Atomic file and directory writes, so a crash never leaves a half-written output behind.

Everything tinylm writes goes to a temporary name beside its target, is flushed to disk, and is renamed
into place only once complete. A reader therefore sees either the old output or the whole new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, for writers that open files by name; on success fsync and rename
    it onto `path`, on any exception remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `path`; on success fsync and rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success replace `path` with it.

    On any exception the temporary directory is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the mode mkdir() would
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as YAML (keys in their given order), atomically."""
    with atomic_file(path) as f:
        yaml.safe_dump(obj, f, sort_keys=False, allow_unicode=True)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The dotted path of the first field where two nested configs differ, or None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if old == new else f"{prefix.rstrip('.')} (was {old!r}, now {new!r})"


def check_out_dir(out: str | os.PathLike, config: dict[str, Any] | None, overwrite: bool = False) -> bool:
    """Guard an output directory against mixing two different runs.

    Returns True if `out` already holds a run with this exact `config` (in its `config.yaml`), False if it
    is absent or empty. Raises TinyLMError if it holds something else, unless `overwrite` is set (then
    the old contents are removed). With `config` None (a command that records no config, such as an
    import), any non-empty directory is something else, and `overwrite` leaves it for the command's atomic
    write to replace, so a model can even be rewritten onto its own directory.
    """
    from .errors import TinyLMError

    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return False
    if config is None and not overwrite:
        raise TinyLMError(
            f"{out} already exists and is not empty; choose another --out or pass --overwrite true"
        )
    if overwrite:
        if config is not None:
            shutil.rmtree(out)
        return False
    saved = out / "config.yaml"
    if not saved.exists():
        raise TinyLMError(
            f"output directory {out} is not empty and holds no tinylm config.yaml; choose another"
        )
    old = read_yaml(saved)
    diff = first_difference(old, to_plain(config))
    if diff:
        raise TinyLMError(
            f"output directory {out} already holds a different run: {diff}. "
            "Choose another output directory or pass --overwrite true"
        )
    return True


def to_plain(obj: Any) -> Any:
    """Dataclasses, paths and tuples turned into YAML-safe dicts, strings and lists."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
