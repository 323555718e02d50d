"""Corpora and the readers that turn them into clean documents.

Token shards live in `tinylm.data.shards` (imported on its own, since it needs torch and the tokenizer).
"""

from .corpora import CORPORA, Corpus, print_corpora
from .readers import read_documents, resolve_source

__all__ = ["CORPORA", "Corpus", "print_corpora", "read_documents", "resolve_source"]
