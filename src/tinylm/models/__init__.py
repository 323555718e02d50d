"""Model families behind one interface (`base.Backbone`), their building blocks, heads, adapters and files.

`build_model(config)` and `load_model(dir)` are the two ways to make a model; `save_model` writes one.
"""

from .base import Backbone, Cache, Family, ParamCounts
from .checkpoint import load_model, read_config, save_model
from .config import PRESETS, ModelConfig
from .registry import (
    FAMILIES,
    build_model,
    get_family,
    model_flops_per_token,
    param_counts,
    require_generative,
)

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Backbone",
    "Cache",
    "Family",
    "ModelConfig",
    "ParamCounts",
    "build_model",
    "get_family",
    "load_model",
    "model_flops_per_token",
    "param_counts",
    "read_config",
    "require_generative",
    "save_model",
]
