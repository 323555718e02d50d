"""Model families and their building blocks."""

from .config import PRESETS, ModelConfig
from .decoder import TinyLM
from .flops import ParamCounts, model_flops_per_token, param_counts
from .kv_cache import KVCache

__all__ = [
    "PRESETS",
    "KVCache",
    "ModelConfig",
    "ParamCounts",
    "TinyLM",
    "model_flops_per_token",
    "param_counts",
]
