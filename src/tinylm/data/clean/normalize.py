"""Unicode and whitespace normalisation of a document, and the key that exact deduplication compares.

The kept text changes as little as meaning allows: Unicode NFC by default (NFKC on request; NFKC turns
full-width punctuation such as "，" into ASCII ","), unusual spaces (no-break, ideographic, zero-width)
made plain, trailing spaces cut, runs of spaces and tabs inside a line made one space, and more than one
blank line in a row made one. The dedup key is stricter -- NFKC, case-folded, all whitespace removed -- so
two documents that differ only in width, case or layout count as the same text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_RUNS = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"\s+")
FORMS = ("NFC", "NFKC")


def normalize_text(text: str, form: str = "NFC") -> str:
    """`text` in Unicode `form` with its whitespace made regular (see the module docstring)."""
    text = unicodedata.normalize(form, _ZERO_WIDTH.sub("", text))
    text = _RUNS.sub(" ", _SPACES.sub(" ", text))
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def dedup_key(text: str) -> bytes:
    """A hash equal for texts that are the same up to NFKC, case and whitespace."""
    canonical = _WHITESPACE.sub("", unicodedata.normalize("NFKC", text).casefold())
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).digest()
