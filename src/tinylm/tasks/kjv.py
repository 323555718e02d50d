"""KJV task: recall a King James verse from its reference, either continuing its opening words or quoting it.

"Continue Genesis 1:3 (KJV): And God said," -> "Let there be light: and there was light." The opening is the
first third to two thirds of the words (the seed picks the cut); half the verses are asked as "Quote
Genesis 1:3 (KJV)." instead, and verses under four words always are. Rows are split by reference, so a
held-out verse is never asked in training (a model may still have read it in pretraining: that is the
recall this task measures). References are written in full ("1 Samuel 3:4", from the corpus's "1Sm3:4").
Each row also carries the words the answer must be (`expected`), which its reward compares word for word.
"""

from __future__ import annotations

import random
import re

from .base import Rows, Task, records

# The corpus's book abbreviations and the names references are written with.
_BOOK_NAMES = (
    "Ge=Genesis, Exo=Exodus, Lev=Leviticus, Num=Numbers, Deu=Deuteronomy, Josh=Joshua, Jdgs=Judges, "
    "Ruth=Ruth, 1Sm=1 Samuel, 2Sm=2 Samuel, 1Ki=1 Kings, 2Ki=2 Kings, 1Chr=1 Chronicles, "
    "2Chr=2 Chronicles, Ezra=Ezra, Neh=Nehemiah, Est=Esther, Job=Job, Psa=Psalms, Prv=Proverbs, "
    "Eccl=Ecclesiastes, SSol=Song of Solomon, Isa=Isaiah, Jer=Jeremiah, Lam=Lamentations, "
    "Eze=Ezekiel, Dan=Daniel, Hos=Hosea, Joel=Joel, Amos=Amos, Obad=Obadiah, Jonah=Jonah, Mic=Micah, "
    "Nahum=Nahum, Hab=Habakkuk, Zep=Zephaniah, Hag=Haggai, Zec=Zechariah, Mal=Malachi, Mat=Matthew, "
    "Mark=Mark, Luke=Luke, John=John, Acts=Acts, Rom=Romans, 1Cor=1 Corinthians, 2Cor=2 Corinthians, "
    "Gal=Galatians, Eph=Ephesians, Phi=Philippians, Col=Colossians, 1Th=1 Thessalonians, "
    "2Th=2 Thessalonians, 1Tim=1 Timothy, 2Tim=2 Timothy, Titus=Titus, Phmn=Philemon, Heb=Hebrews, "
    "Jas=James, 1Pet=1 Peter, 2Pet=2 Peter, 1Jn=1 John, 2Jn=2 John, 3Jn=3 John, Jude=Jude, "
    "Rev=Revelation"
)
BOOKS = dict(pair.strip().split("=") for pair in _BOOK_NAMES.split(","))
_REF = re.compile(r"^(\d?[A-Za-z]+)\s*(\d+:\d+)$")


def full_reference(ref: str) -> str:
    """Expand "Ge1:3" to "Genesis 1:3"; a reference in another spelling is kept as it is."""
    m = _REF.match(ref.strip())
    return f"{BOOKS.get(m[1], m[1])} {m[2]}" if m else ref.strip()


def rows(source: str, rng: random.Random) -> Rows:
    for _, r in records(source, ("ref", "text")):
        ref, words = full_reference(str(r["ref"])), str(r["text"]).split()
        if not words:
            continue
        if len(words) < 4 or rng.random() < 0.5:
            prompt, answer = f"Quote {ref} (KJV).", " ".join(words)
        else:
            cut = rng.randint(len(words) // 3 or 1, 2 * len(words) // 3)
            prompt, answer = f"Continue {ref} (KJV): {' '.join(words[:cut])}", " ".join(words[cut:])
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        yield str(r["ref"]), {"messages": messages, "ref": ref, "expected": answer}


def reward(completions: list[str], expected: list[str], **_) -> list[float]:
    """1.0 for an answer that is word for word the row's expected words (spacing aside), else 0.0."""
    return [float(text.split() == str(e).split()) for text, e in zip(completions, expected, strict=True)]


TASK = Task(
    "kjv", "continue or quote a King James verse from its reference", rows, source="kjv", reward="verse"
)
