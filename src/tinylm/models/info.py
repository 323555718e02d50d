"""`tinylm info`: a model's config, parameter counts and training FLOPs per token, without loading weights."""

from __future__ import annotations

from pathlib import Path

from ..errors import TinyLMError
from ..io import read_json
from .checkpoint import CONFIG, read_config
from .config import PRESETS, ModelConfig
from .registry import model_flops_per_token, param_counts


def model_info(model: str, context: int | None = None) -> None:
    """Print a model's config, parameter counts and training FLOPs per token.

    Args:
        model: A model directory (tinylm or Hugging Face), or a preset name.
        context: Context length for the FLOPs estimate (default: the model's max_seq_len).
    """
    if Path(model).is_dir():
        config = read_config(model)
        arch = read_json(Path(model) / CONFIG).get("architectures", ["?"])[0]
    elif model in PRESETS:
        config, arch = ModelConfig(preset=model), f"preset {model}"
    else:
        raise TinyLMError(
            f"{model!r} is neither a model directory nor a preset ({', '.join(sorted(PRESETS))})"
        )
    counts, ctx = param_counts(config), context or config.max_seq_len
    print(f"model: {model} ({arch})")
    for key, value in config.to_dict().items():
        print(f"  {key}: {value}")
    print(
        f"parameters: {counts.total:,} total, {counts.blocks:,} non-embedding, {counts.embedding:,} embedding"
    )
    print(f"training FLOPs per token at context {ctx}: {model_flops_per_token(config, ctx):,}")
