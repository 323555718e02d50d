"""Import models from Hugging Face directories and GGUF files, and export tinylm checkpoints back.

A tinylm checkpoint already uses Hugging Face's layout (see `tinylm.model.checkpoint`), so these
commands mostly validate, convert dtypes and rebuild what a format lacks (a GGUF has no tokenizer.json).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TinyLMError


def output_dir(out: str | None, overwrite: bool) -> Path:
    """The directory a command may write, refusing to replace an existing one unless asked."""
    if not out:
        raise TinyLMError("an output directory is required: pass --out DIR")
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise TinyLMError(
            f"{path} already exists and is not empty; choose another --out or pass --overwrite true"
        )
    return path
