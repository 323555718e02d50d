"""Preference pairs: the poems task's prompt, a real quatrain as chosen, the same poem damaged as rejected.

The damage is one a reader can see and a reward function measures (`tinylm.tasks.poetry`):

- `longer` / `shorter`: one line gains a character (taken from the poem itself) or loses one;
- `punctuation`: a line's closing mark is dropped (two lines run together) or the final full stop becomes a
  comma;
- `rhyme`: the last character of an even line is replaced by a common rhyme word (one of the 300 characters
  that most often end a poem of the corpus, so rarity gives nothing away) whose finals share no rhyme group with the other
  even line (checked with pypinyin); used only when the real poem rhymes, so the pair differs in rhyme alone.

Half the pairs are drawn as `rhyme` (falling back to a form damage for a poem that does not rhyme), the other
half split evenly between the three form damages; the row's `corruption` field names the one applied.

Every pair is kept only if the rejected poem scores lower than the chosen one under `poem_reward`. Pairs
are split by title, as the poems task is, so held-out pairs belong to held-out titles.
"""

from __future__ import annotations

import functools
import random
from collections import Counter

from .base import Rows, Task
from .poems import prompt, quatrains
from .poetry import poem_lines, poem_reward, poem_rhyme_score, rhyme_groups


def _text(lines: list[tuple[str, str]]) -> str:
    """Lines back into the corpus layout: one couplet per line."""
    couplets = ["".join(b + m for b, m in lines[i : i + 2]) for i in range(0, len(lines), 2)]
    return "\n".join(couplets)


@functools.lru_cache(maxsize=1024)
def _non_rhyming(groups: frozenset[str], chars: tuple[str, ...]) -> list[str]:
    """The characters of `chars` that have a known rhyme and share no rhyme group with `groups`."""
    return [c for c in chars if rhyme_groups(c) and not rhyme_groups(c) & groups]


def corrupt(text: str, kind: str, rng: random.Random, rhyme_chars: tuple[str, ...]) -> str | None:
    """`text` damaged by `kind` (see the module docstring), or None when that damage does not apply."""
    lines = poem_lines(text)
    i = rng.randrange(len(lines))
    body, mark = lines[i]
    if kind == "longer":
        pos = rng.randrange(len(body) + 1)
        lines[i] = (body[:pos] + rng.choice("".join(b for b, _ in lines)) + body[pos:], mark)
    elif kind == "shorter":
        pos = rng.randrange(len(body))
        lines[i] = (body[:pos] + body[pos + 1 :], mark)
    elif kind == "punctuation":
        if i == len(lines) - 1:
            lines[i] = (body, "，")
        else:
            lines[i : i + 2] = [(body + lines[i + 1][0], lines[i + 1][1])]
    else:  # rhyme
        if poem_rhyme_score(text) < 1:
            return None
        j = rng.choice(range(1, len(lines), 2))
        others = frozenset().union(
            *(rhyme_groups(lines[k][0][-1]) for k in range(1, len(lines), 2) if k != j)
        )
        candidates = _non_rhyming(others, rhyme_chars)
        if not candidates:
            return None
        lines[j] = (lines[j][0][:-1] + rng.choice(candidates), lines[j][1])
    return _text(lines)


def rows(source: str, rng: random.Random) -> Rows:
    poems = list(quatrains(source))
    ends = Counter(p.text[-2] for p in poems)  # the last character of each poem
    rhyme_chars = tuple(sorted(c for c, _ in ends.most_common(300)))  # common rhyme words, not rarities
    for p in poems:
        kind = rng.choice(["rhyme", "rhyme", "rhyme", "longer", "shorter", "punctuation"])
        rejected = corrupt(p.text, kind, rng, rhyme_chars)
        if rejected is None:
            kind = rng.choice(["longer", "shorter", "punctuation"])
            rejected = corrupt(p.text, kind, rng, rhyme_chars)
        if poem_reward(rejected, p.form) >= poem_reward(p.text, p.form):
            continue
        row = {
            "prompt": [{"role": "user", "content": prompt(p.form, p.title)}],
            "chosen": [{"role": "assistant", "content": p.text}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "form": p.form,
            "title": p.title,
            "corruption": kind,
        }
        yield p.key, row


TASK = Task(
    "preferences",
    "the poems prompt; chosen = the real poem, rejected = it damaged in form or rhyme",
    rows,
    source="tang",
    reward="poem",
    metrics=("exact_form", "form_score"),
)
