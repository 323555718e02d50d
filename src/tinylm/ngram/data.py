"""The text an n-gram model trains and is scored on: a split of a corpus or of token shards, and its ids.

Both come split exactly as `tinylm data prepare` splits them (`tinylm.data.shards.split_corpus`), and
the UTF-8 size of a split is the one the shards' manifest records, so an n-gram's bits per byte and a
neural model's `tinylm eval bpb` are computed over the same text with the same denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.shards import SPLITS, TokenShards, split_corpus
from ..errors import TinyLMError
from ..tokenizer import Tokenizer
from .model import SPECIALS, NGramLM
from .units import sentences
from .vocab import encode


@dataclass
class Split:
    """One split's documents and UTF-8 size; with `token_ids`, the tokenizer ids they came from (shards)."""

    documents: list[str]
    n_bytes: int
    token_ids: list[np.ndarray] | None = None


def corpus_splits(
    data: str, val_fraction: float, field: str | None, template: str | None, skip_bad_lines: bool
) -> dict[str, Split]:
    """Both splits of a corpus (embedded name, file, glob or directory)."""
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    for split, doc in split_corpus(data, val_fraction, field, template, skip_bad_lines):
        docs[split].append(doc)
    return {s: Split(d, sum(len(x.encode("utf-8")) for x in d)) for s, d in docs.items()}


def shards_split(shards: TokenShards, split: str, tokenizer: Tokenizer, decode: bool) -> Split:
    """One split of token shards as its documents (cut at EOS), decoded to text when `decode`."""
    tokens = np.asarray(shards.split(split), dtype=np.int64)
    ends = np.flatnonzero(tokens == shards.manifest["eos_id"])
    ids = [d for d in np.split(tokens, ends + 1)[: len(ends)]]
    ids = [d[:-1] for d in ids]  # without their EOS, which the n-gram predicts as </s>
    documents = [tokenizer.decode(d.tolist()) for d in ids] if decode else []
    return Split(documents, shards.manifest["splits"][split]["bytes"], ids)


def sentence_ids(
    lm: NGramLM | None, split: Split, unit: str, tokenizer: Tokenizer | None
) -> list[np.ndarray]:
    """The split's sentences as ids of `lm`'s vocabulary (`<unk>` for tokens outside it)."""
    if unit == "token":
        ids = split.token_ids
        if ids is None:
            ids = [
                np.asarray(x, dtype=np.int64) for x in tokenizer.encode_batch(split.documents, special=False)
            ]
        return [d + len(SPECIALS) for d in ids]  # the vocabulary is the specials, then the tokenizer's tokens
    return encode((s for doc in split.documents for s in sentences(doc, unit)), lm.index)


def check_split(split: Split, name: str, where: str) -> None:
    if not split.documents and not split.token_ids:
        raise TinyLMError(
            f"{where}: the {name!r} split is empty; nothing to {'train on' if name == 'train' else 'score'}"
        )
