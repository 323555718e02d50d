"""Token shards: a corpus tokenised once into flat arrays, then sampled for training and scanned for eval.

`prepare_shards` writes into one directory:

- `train.bin`, `val.bin`: the token ids of every document of the split, each document followed by EOS,
  as a flat little-endian array (uint16 when the vocabulary fits, else uint32), read back by `np.memmap`.
- `manifest.json`: tokenizer hash, dtype, vocab size, EOS id, where the text came from, and per split the
  number of documents, tokens (EOS included) and UTF-8 bytes of the documents' text (EOS excluded) -- the
  denominator of bits per byte.
- `config.yaml`: the arguments of the run, so a second call with the same arguments is skipped.

The train / validation split is deterministic and needs no seed:

- a corpus of exactly one plain-text file is cut by characters: the first `1 - val_fraction` of its
  (cleaned) characters are train, the rest validation, each part one document (for Shakespeare this is
  the usual 90 / 10 split);
- any other corpus (JSONL, several files) is split by documents: document i goes to validation when
  `floor((i + 1) * f) > floor(i * f)`, i.e. evenly spread, every 10th for f = 0.1, exactly floor(n * f) in all.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import atomic_dir, check_out_dir, read_json, read_yaml, write_json, write_yaml
from ..tokenizer import Tokenizer
from .jsonl import warn
from .readers import file_kind, read_documents, read_text, resolve_source

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val")
_CHUNK_CHARS = 1 << 20  # documents are tokenised in chunks of about this many characters
_CHUNK_DOCS = 4096


def _split_by_characters(path: Path, val_fraction: float) -> Iterator[tuple[str, str]]:
    text = read_text(path)
    if not text.strip():
        raise TinyLMError(f"{path}: empty corpus (the file holds no text)")
    cut = int(len(text) * (1 - val_fraction))
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        if part:
            yield split, part


def _split_by_documents(docs: Iterator[str], val_fraction: float) -> Iterator[tuple[str, str]]:
    for i, doc in enumerate(docs):
        yield ("val" if int((i + 1) * val_fraction) > int(i * val_fraction) else "train"), doc


def splits_by_characters(paths: list[Path]) -> bool:
    """A corpus of exactly one plain-text file is split by characters, any other by documents."""
    return len(paths) == 1 and file_kind(paths[0]) == "text"


def split_corpus(
    data: str,
    val_fraction: float = 0.1,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
) -> Iterator[tuple[str, str]]:
    """(split, document) pairs of a corpus, split as the module docstring says; what shards and every
    other held-out score (n-gram models) are computed on."""
    if not 0 <= val_fraction < 1:
        raise TinyLMError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = resolve_source(data)
    if splits_by_characters(paths):
        return _split_by_characters(paths[0], val_fraction)
    return _split_by_documents(read_documents(data, field, template, skip_bad_lines), val_fraction)


def _chunks(docs: Iterator[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """Group (split, document) pairs into per-split lists, keeping each split's order."""
    buffers: dict[str, list[str]] = {s: [] for s in SPLITS}
    chars = dict.fromkeys(SPLITS, 0)
    for split, doc in docs:
        buffers[split].append(doc)
        chars[split] += len(doc)
        if chars[split] >= _CHUNK_CHARS or len(buffers[split]) >= _CHUNK_DOCS:
            yield split, buffers[split]
            buffers[split], chars[split] = [], 0
    for split in SPLITS:
        if buffers[split]:
            yield split, buffers[split]


def _dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32; shards read the same on any machine."""
    return np.dtype("<u2" if vocab_size <= 1 << 16 else "<u4")


def _encode_chunk(tok: Tokenizer, split: str, docs: list[str]) -> tuple[str, np.ndarray, int, int]:
    """(split, tokens with EOS after each document, documents, UTF-8 bytes) for one chunk."""
    eos, dtype = [tok.eos_id], _dtype(tok.vocab_size)
    ids = [np.asarray(d + eos, dtype=dtype) for d in tok.encode_batch(docs, special=False)]
    return split, np.concatenate(ids), len(docs), sum(len(d.encode("utf-8")) for d in docs)


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    # One thread per worker process: the pool is the parallelism.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = Tokenizer.load(tokenizer_dir)


def _encode_in_worker(split: str, docs: list[str]) -> tuple[str, np.ndarray, int, int]:
    return _encode_chunk(_worker_tokenizer, split, docs)


def _encoded(chunks: Iterator[tuple[str, list[str]]], tok: Tokenizer, tokenizer_dir: str, workers: int):
    """Encoded chunks in input order, from a pool of `workers` processes (in this process when 1)."""
    if workers == 1:
        for split, docs in chunks:
            yield _encode_chunk(tok, split, docs)
        return
    with multiprocessing.Pool(workers, _init_worker, (tokenizer_dir,)) as pool:
        pending: collections.deque = collections.deque()
        for split, docs in chunks:
            pending.append(pool.apply_async(_encode_in_worker, (split, docs)))
            if len(pending) > 2 * workers:  # bound memory: read ahead only a few chunks
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _write_splits(out: Path, encoded) -> dict[str, dict[str, Any]]:
    """Append each encoded chunk to its split's file; return the per-split counts for the manifest."""
    stats = {s: {"documents": 0, "tokens": 0, "bytes": 0, "file": f"{s}.bin"} for s in SPLITS}
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(out / f"{s}.bin", "wb")) for s in SPLITS}
        bar = stack.enter_context(tqdm(desc="tokenising", unit="B", unit_scale=True, disable=None))
        for split, ids, n_docs, n_bytes in encoded:
            files[split].write(ids.tobytes())
            stat = stats[split]
            stat["documents"] += n_docs
            stat["tokens"] += len(ids)
            stat["bytes"] += n_bytes
            bar.update(n_bytes)
    return stats


def prepare_shards(
    data: str,
    tokenizer: str,
    out: str,
    val_fraction: float = 0.1,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
    workers: int = 0,
    overwrite: bool = False,
) -> TokenShards:
    """Tokenise a corpus into train / validation token shards for pretraining and evaluation.

    Args:
        data: Corpus: an embedded name (see `tinylm data list`), a .txt / .jsonl file, a glob or a directory.
        tokenizer: Tokenizer directory (from `tinylm tokenizer train`, or an imported one).
        out: Output directory for train.bin, val.bin, manifest.json and config.yaml.
        val_fraction: Share held out for validation: the last characters of a single text file, else
            evenly spread documents.
        field: JSONL field that holds each document's text.
        template: JSONL template instead of a field, e.g. '{title}\\n{paragraphs}' (lists joined by newlines).
        skip_bad_lines: Skip (and count) JSONL lines that are not JSON objects instead of stopping.
        workers: Tokenising processes; 0 means one per CPU core, 1 tokenises in this process.
        overwrite: Replace an output directory that holds a different run.
    """
    tok = Tokenizer.load(tokenizer)
    config = {
        "data": data,
        "tokenizer": str(tokenizer),
        "val_fraction": val_fraction,
        "field": field,
        "template": template,
        "skip_bad_lines": skip_bad_lines,
    }
    if check_out_dir(out, config, overwrite):
        shards = TokenShards.open(out)
        if shards.manifest["tokenizer_hash"] == tok.hash:
            print(f"shards: {out} already holds these shards; skipping")
            return shards
        print(f"shards: the tokenizer in {tokenizer} has changed since {out} was made; preparing again")
    paths = resolve_source(data)
    by_characters = splits_by_characters(paths)
    docs = split_corpus(data, val_fraction, field, template, skip_bad_lines)
    workers = workers if workers > 0 else os.cpu_count() or 1
    with atomic_dir(out) as tmp:
        stats = _write_splits(tmp, _encoded(_chunks(docs), tok, str(tokenizer), workers))
        manifest = {
            "format": "tinylm-shards-1",
            "tokenizer_hash": tok.hash,
            "dtype": _dtype(tok.vocab_size).name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "source": data,
            "files": [str(p) for p in paths],
            "split_by": "characters" if by_characters else "documents",
            "val_fraction": val_fraction,
            "splits": stats,
        }
        write_json(tmp / "manifest.json", manifest)
        write_yaml(tmp / "config.yaml", config)
    if stats["val"]["tokens"] == 0 and val_fraction > 0:
        warn(f"{out}: the validation split is empty ({stats['train']['documents']} documents in all)")
    train, val = stats["train"], stats["val"]
    print(f"shards: {train['tokens']:,} train and {val['tokens']:,} validation tokens -> {out}")
    return TokenShards.open(out)


@dataclass
class TokenShards:
    """A prepared shard directory: its manifest, and each split as a read-only memory map."""

    dir: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenShards:
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise TinyLMError(f"{path}: no manifest.json here; prepare shards with `tinylm data prepare`")
        return cls(path, read_json(path / "manifest.json"))

    def split(self, name: str) -> np.ndarray:
        """The tokens of split `name` ("train" or "val"), memory-mapped, not loaded."""
        if name not in self.manifest["splits"]:
            raise TinyLMError(
                f"{self.dir}: no split {name!r}; expected one of {', '.join(self.manifest['splits'])}"
            )
        info = self.manifest["splits"][name]
        dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")  # written little-endian
        if info["tokens"] == 0:
            return np.empty(0, dtype=dtype)
        return np.memmap(self.dir / info["file"], dtype=dtype, mode="r", shape=(info["tokens"],))

    def tokenizer_dir(self) -> Path:
        """The tokenizer directory recorded when the shards were prepared."""
        saved = read_yaml(self.dir / "config.yaml") if (self.dir / "config.yaml").is_file() else {}
        recorded = saved.get("tokenizer")
        if recorded and (Path(recorded) / "tokenizer.json").is_file():
            return Path(recorded)
        raise TinyLMError(f"{self.dir} does not say where its tokenizer is; pass --tokenizer DIR")

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise TinyLMError unless `tokenizer` is the one these shards were made with."""
        if tokenizer.hash != self.manifest["tokenizer_hash"]:
            raise TinyLMError(
                f"{self.dir} was tokenised with another tokenizer (hash {self.manifest['tokenizer_hash'][:12]}, "
                f"this one {tokenizer.hash[:12]}); prepare the shards again with this tokenizer"
            )


def _rows(tokens: np.ndarray, starts, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # here: what only reads shards (the n-gram verbs) does not pay torch's import

    rows = torch.from_numpy(
        np.stack([np.asarray(tokens[s : s + length + 1], dtype=np.int64) for s in starts])
    )
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


class RandomWindows:
    """Training batches of random windows; batch `step` is a pure function of (seed, step).

    So a resumed run needs only its step to see exactly the batches it would have seen; the ranks of a
    distributed run get independent streams by using different seeds.
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int = 0):
        if len(tokens) <= context:
            raise TinyLMError(
                f"a split of {len(tokens)} tokens is too short for windows of {context} (+1) tokens"
            )
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): int64 tensors (batch_size, context), y[i, t] the token after x[i, t]."""
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)
        return _rows(self.tokens, starts, self.context)


def sequential_windows(
    tokens: np.ndarray, context: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping windows for evaluation: every token but the first is a target once.

    Window j has inputs tokens[j*context : (j+1)*context] and targets shifted by one; each window starts
    without the context of the one before. Full windows come in batches of `batch_size` (the last batch
    may have fewer rows); the leftover targets, if any, come last as a batch of one shorter window.
    """
    targets = len(tokens) - 1
    full = list(range(0, targets - context + 1, context))
    for i in range(0, len(full), batch_size):
        yield _rows(tokens, full[i : i + batch_size], context)
    tail = len(full) * context
    if tail < targets:
        yield _rows(tokens, [tail], targets - tail)


def summarize(out: str | os.PathLike) -> str:
    """A Markdown table of a shard directory's splits, for the pipeline's report."""
    manifest = TokenShards.open(out).manifest
    rows = ["| split | documents | tokens | UTF-8 bytes | tokens per byte |", "|---|---|---|---|---|"]
    for name, s in manifest["splits"].items():
        ratio = s["tokens"] / s["bytes"] if s["bytes"] else 0.0
        rows.append(f"| {name} | {s['documents']:,} | {s['tokens']:,} | {s['bytes']:,} | {ratio:.3f} |")
    return f"Split by {manifest['split_by']} ({manifest['dtype']} tokens).\n\n" + "\n".join(rows)
