"""Generation: sampling, the batched KV-cache engine, `tinylm generate` and `tinylm chat`."""

from .engine import Engine, Sequence
from .sampling import SamplingParams

__all__ = ["Engine", "SamplingParams", "Sequence"]
