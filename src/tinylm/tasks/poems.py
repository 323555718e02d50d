"""Poems task: "写一首五言绝句，题为《X》。" answered with a real Tang quatrain of that form and title.

The form is judged from the text itself (4 lines of 5 or 7 Han characters, each closed by a mark; see
`tinylm.tasks.poetry.poem_form_score`), so every answer is exactly what the prompt asks for; a `form` field in
the record (as Tang-300 has) is trusted only when the text agrees. Editors' notes such as "（一作「叉」）"
are removed first. Rows are split by title, and poems that share a title or a text go together, so neither
a held-out title nor a held-out poem is seen in training. A poem is written as in the corpus: one couplet per line.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..io import read_json
from .base import Rows, Task, records
from .poetry import detect_form, is_exact_form, poem_form_score, poem_reward

QUATRAINS = ("五言绝句", "七言绝句")
_NOTE = re.compile(r"[（(][^（()）]*[)）]")


@dataclass(frozen=True)
class Poem:
    title: str
    author: str
    form: str
    text: str
    key: str  # split key: the first title of the group of poems linked by a shared title or text


def prompt(form: str, title: str) -> str:
    """The instruction that asks for a poem of `form` titled `title`."""
    return f"写一首{form}，题为《{title}》。"


def _split_keys(pairs: list[tuple[str, str]]) -> list[str]:
    """For each (title, text), the smallest title linked to it through shared titles or texts (union-find).

    The 全唐诗 holds the same poem under several titles; keying by linked group keeps its copies on one
    side of the split, so neither a held-out title nor a held-out poem text appears in training.
    """
    parent: dict[tuple[int, str], tuple[int, str]] = {}  # nodes: (0, title) and (1, text)

    def find(x: tuple[int, str]) -> tuple[int, str]:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    for title, text in pairs:
        a, b = sorted((find((0, title)), find((1, text))))
        parent[b] = a  # the smaller root wins: a title over a text, then the smaller title
    return [find((0, title))[1] for title, _ in pairs]


def quatrains(source: str) -> list[Poem]:
    """Every distinct poem of `source` that is exactly a 五言绝句 or 七言绝句, cleaned of editors' notes."""
    found: dict[tuple[str, str], tuple[str, str]] = {}  # (title, text) -> (author, form)
    for _, r in records(source, ("title", "paragraphs")):
        title = str(r["title"]).strip()
        paragraphs = r["paragraphs"] if isinstance(r["paragraphs"], list) else [r["paragraphs"]]
        text = "\n".join(line for p in paragraphs if (line := _NOTE.sub("", str(p)).strip()))
        claimed = r.get("form")
        form = claimed if claimed in QUATRAINS and is_exact_form(text, claimed) else detect_form(text)
        if title and form in QUATRAINS:
            found.setdefault((title, text), (str(r.get("author", "")), form))
    keys = _split_keys(list(found))
    return [Poem(t, a, f, x, k) for ((t, x), (a, f)), k in zip(found.items(), keys, strict=True)]


def rows(source: str, rng: random.Random) -> Rows:
    for p in quatrains(source):
        messages = [
            {"role": "user", "content": prompt(p.form, p.title)},
            {"role": "assistant", "content": p.text},
        ]
        yield p.key, {"messages": messages, "form": p.form, "title": p.title, "author": p.author}


def reward(completions: list[str], form: list[str], **_) -> list[float]:
    """Form and rhyme of each answer for the form its prompt asks for (`poetry.poem_reward`), in [0, 1]."""
    return [poem_reward(text, f) for text, f in zip(completions, form, strict=True)]


def exact_form(completions: list[str], form: list[str], **_) -> list[float]:
    """1.0 for an answer of exactly the asked form (lines, characters and marks), else 0.0."""
    return [float(is_exact_form(text, f)) for text, f in zip(completions, form, strict=True)]


def form_score(completions: list[str], form: list[str], **_) -> list[float]:
    """How well each answer keeps the asked form (`poetry.poem_form_score`: lines, characters, marks)."""
    return [poem_form_score(text, f) for text, f in zip(completions, form, strict=True)]


TASK = Task(
    "poems",
    "写一首五言绝句，题为《X》。 -> a real Tang quatrain of that form and title",
    rows,
    source="tang",
    reward="poem",
    metrics=("exact_form", "form_score"),
)


def select_form(task_dir: str | Path, out: str | Path, form: str) -> Path:
    """Copy the rows of one form from a `poems` or `preferences` task directory into `out`; returns `out`.

    A small model learns one form far sooner than the form the prompt names among two (7 of 10 quatrains
    are 七言), so the 五言绝句 benchmarks train and score on 五言绝句 rows alone; the split is untouched.
    """
    from ..data.jsonl import jsonl_rows
    from .make import write_splits

    src = Path(task_dir)
    splits = {
        split: [
            row for _, row in jsonl_rows(src / f"{split}.jsonl", allow_empty=True) if row.get("form") == form
        ]
        for split in ("train", "test")
    }
    manifest = {
        **read_json(src / "manifest.json"),
        "form": form,
        "rows": {k: len(v) for k, v in splits.items()},
    }
    write_splits(out, splits, manifest)
    return Path(out)
