"""Word vectors: skip-gram with negative sampling (word2vec) trained on any corpus, and the lookups
(neighbours, analogies, WordSim-353 and Google-analogy scores) that work the same on those vectors and on a
language model's own input embeddings."""

from .keyed import WordVectors, open_vectors

__all__ = ["WordVectors", "open_vectors"]
