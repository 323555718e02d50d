"""Generation: the engine (the one decode loop, continuous batching over any Backbone), sampling, token
scoring, `tinylm generate` and `tinylm chat`."""

from .engine import Engine, Sequence
from .sampling import SamplingParams

__all__ = ["Engine", "SamplingParams", "Sequence"]
