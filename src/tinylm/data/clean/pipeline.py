"""The per-document work of `tinylm data clean`, run in a pool of processes: normalise, identify the
language, apply the quality rules, scrub personal data, and compute the keys deduplication compares.

Deduplication itself needs every document seen before, so it runs afterwards in the main process
(`run.py`); the workers hand it only a hash of the normalised text and the LSH band keys.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..readers import Document
from .langid import identify
from .lsh import band_keys
from .minhash import MinHasher
from .normalize import dedup_key, normalize_text
from .pii import scrub
from .rules import C4Rules, GopherRules, c4, gopher

CHUNK = 256
"""Documents per task sent to a worker."""


@dataclass
class Settings:
    """Everything the per-document work depends on (sent once to each worker)."""

    normalization: str = "NFC"
    languages: list[str] | None = None
    gopher: GopherRules | None = field(default_factory=GopherRules)
    c4: C4Rules | None = field(default_factory=C4Rules)
    pii: bool = True
    num_perm: int = 128
    seed: int = 1
    bands: int = 0
    """0: no near-duplicate detection."""
    rows: int = 0


@dataclass
class Processed:
    """One document after the per-document work."""

    doc: Document
    text: str
    language: str | None = None
    drop: tuple[str, str] | None = None
    """(reason, rule) when a filter dropped the document."""
    c4_lines: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    key: bytes = b""
    bands: list[int] = field(default_factory=list)


def process(doc: Document, settings: Settings, hasher: MinHasher | None) -> Processed:
    """Run the filters over one document and compute its dedup keys (when it survives them)."""
    text = normalize_text(doc.text, settings.normalization)
    if not text:
        return Processed(doc, text, drop=("empty", "empty"))
    out = Processed(doc, text)
    if settings.languages:
        out.language = identify(text)[0]
        if out.language not in settings.languages:
            out.drop = ("language", f"language_{out.language}")
            return out
    if settings.gopher and (rule := gopher(text, settings.gopher)):
        out.drop = ("quality", rule)
        return out
    if settings.c4:
        verdict = c4(text, settings.c4)
        out.c4_lines = verdict.lines
        if verdict.reason:
            out.drop = ("quality", verdict.reason)
            return out
        out.text = verdict.text
    if settings.pii:
        out.text, out.pii = scrub(out.text)
    out.key = dedup_key(out.text)
    if hasher and (signature := hasher.text_signature(out.text)) is not None:
        out.bands = band_keys(signature, settings.bands, settings.rows)
    return out


def _hasher(settings: Settings) -> MinHasher | None:
    return MinHasher(settings.num_perm, settings.seed) if settings.bands else None


_worker: tuple[Settings, MinHasher | None] | None = None


def _init_worker(settings: Settings) -> None:
    global _worker
    _worker = settings, _hasher(settings)


def _process_chunk(docs: list[Document]) -> list[Processed]:
    settings, hasher = _worker
    return [process(d, settings, hasher) for d in docs]


def _chunks(docs: Iterator[Document]) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def process_all(docs: Iterator[Document], settings: Settings, processes: int) -> Iterator[Processed]:
    """Every document processed, in input order, by `processes` workers (in this process when 1)."""
    if processes == 1:
        hasher = _hasher(settings)
        for doc in docs:
            yield process(doc, settings, hasher)
        return
    with multiprocessing.Pool(processes, _init_worker, (settings,)) as pool:
        pending: collections.deque = collections.deque()
        for chunk in _chunks(docs):
            pending.append(pool.apply_async(_process_chunk, (chunk,)))
            if len(pending) > 2 * processes:  # bound memory: read ahead only a few chunks
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
