"""Model families and their building blocks."""

from .config import PRESETS, ModelConfig
from .decoder import TinyLM
from .kv_cache import KVCache

__all__ = ["PRESETS", "KVCache", "ModelConfig", "TinyLM"]
