"""N-gram language models: counted in sorted integer arrays, smoothed with modified Kneser-Ney (or KN,
Witten-Bell, add-k), scored in bits per byte like the neural models, sampled, and written as ARPA files."""

from .model import NGramLM
from .train import train_ngram

__all__ = ["NGramLM", "train_ngram"]
