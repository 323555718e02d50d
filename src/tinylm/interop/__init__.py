"""Import models from Hugging Face directories and GGUF files, and export tinylm checkpoints back.

A tinylm checkpoint already uses Hugging Face's layout (see `tinylm.model.checkpoint`), so these
commands mostly validate, convert dtypes and rebuild what a format lacks (a GGUF has no tokenizer.json).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TinyLMError
from ..io import check_out_dir


def output_dir(out: str | None, overwrite: bool) -> Path:
    """The directory an import or export may write: required, and empty unless `overwrite` is set."""
    if not out:
        raise TinyLMError("an output directory is required: pass --out DIR")
    check_out_dir(out, None, overwrite)
    return Path(out)
