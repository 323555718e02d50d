"""The form and rhyme of a Chinese poem, scored so a user can check every number by hand.

The poems task's reward (GRPO / PPO optimise it), its evaluation, and the task generators (`detect_form`
picks real poems of an exact form; preferences damage a poem in a way these scores see) all read them.

A poem is read as *lines*: the text is cut after every line-closing mark (，。？！；) and at every newline;
whitespace is ignored. A line is its body (what precedes the mark) plus the mark ("" when a line ends at a
newline or at the end of the text without one).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import TinyLMError

# form name -> (number of lines, Han characters per line)
FORMS: dict[str, tuple[int, int]] = {
    "五言绝句": (4, 5),
    "七言绝句": (4, 7),
    "五言律诗": (8, 5),
    "七言律诗": (8, 7),
}

LINE_MARKS = "，。？！；"
FINAL_MARKS = "。？！"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_SEGMENT = re.compile(rf"([^{LINE_MARKS}\n]*)([{LINE_MARKS}]?)")

# Rhyme groups by pypinyin's strict finals: the thirteen groups (十三辙) of Mandarin verse, widened where the
# Tang rhyme books (平水韵) join finals that Mandarin has since split: 支微 (i with ei / uei: 悲 rhymes with
# 时), 鱼虞 (u with ü: 去 with 处), 灰 (ei / uei with ai: 回 with 来) and 元 (an / üan with en / uen: 原 with
# 昏). A final may sit in several groups; two characters rhyme when their groups meet.
RHYME_GROUPS: dict[str, str] = {
    "发花": "a ia ua",
    "梭波": "o uo e",
    "乜斜": "ie ve",
    "一七": "i v er ei uei",
    "姑苏": "u v",
    "怀来": "ai uai",
    "灰堆": "ei uei ai uai",
    "遥条": "ao iao",
    "油求": "ou iou",
    "言前": "an ian uan van",
    "元": "an uan van en uen",
    "人辰": "en in uen vn",
    "江阳": "ang iang uang",
    "中东": "eng ing ong iong ueng",
}
_GROUPS_OF: dict[str, set[str]] = {}
for _group, _finals in RHYME_GROUPS.items():
    for _final in _finals.split():
        _GROUPS_OF.setdefault(_final, set()).add(_group)


def poem_lines(text: str) -> list[tuple[str, str]]:
    """Split `text` into (body, closing mark) lines; empty segments are skipped."""
    lines = []
    for raw in text.split("\n"):
        raw = "".join(raw.split())
        for body, mark in _SEGMENT.findall(raw):
            if body or mark:
                lines.append((body, mark))
    return lines


def _form(form: str) -> tuple[int, int]:
    if form not in FORMS:
        raise TinyLMError(f"unknown poem form {form!r}; expected one of {', '.join(FORMS)}")
    return FORMS[form]


def poem_form_score(text: str, form: str) -> float:
    """How well `text` keeps the shape of `form`, in [0, 1]: the mean of three criteria.

    - lines: 1 when the poem has exactly the form's number of lines, falling linearly to 0 at twice as many
      (or none);
    - characters: the share of lines made of exactly the form's number of Han characters and nothing else
      (counted over the expected or actual number of lines, whichever is larger);
    - punctuation: the share of lines that close with a mark from ，。？！；, the last one with a full stop
      (。？！), over the same count.

    A missing or doubled mark changes the line count and the line lengths, so it costs under several criteria.
    """
    n_lines, n_chars = _form(form)
    lines = poem_lines(text)
    n = len(lines)
    if n == 0:
        return 0.0
    denom = max(n, n_lines)
    line_score = max(0.0, 1.0 - abs(n - n_lines) / n_lines)
    chars = sum(len(body) == n_chars and len(_HAN.findall(body)) == n_chars for body, _ in lines)
    marks = sum(
        mark in (FINAL_MARKS if i == n - 1 else LINE_MARKS) and mark != ""
        for i, (_, mark) in enumerate(lines)
    )
    return (line_score + chars / denom + marks / denom) / 3


def is_exact_form(text: str, form: str) -> bool:
    """True when `text` is exactly of `form`: every criterion of `poem_form_score` is met."""
    return poem_form_score(text, form) == 1.0


def detect_form(text: str) -> str | None:
    """The form in `FORMS` that `text` has exactly, or None."""
    return next((form for form in FORMS if is_exact_form(text, form)), None)


@lru_cache(maxsize=65536)
def rhyme_groups(char: str) -> frozenset[str]:
    """The rhyme groups of every reading of one Han character (empty for anything else).

    Heteronyms count: a character rhymes if any of its readings does, since Tang poets used readings
    (斜 as xiá, rhyming with 花 and 家) that are no longer the common one.
    """
    if not _HAN.fullmatch(char):
        return frozenset()
    from pypinyin import Style, pinyin

    finals = pinyin(char, style=Style.FINALS, heteronym=True, errors="ignore")
    return frozenset().union(*(_GROUPS_OF.get(f, ()) for f in (finals[0] if finals else [])))


def poem_rhyme_score(text: str) -> float:
    """How well the even lines rhyme, in [0, 1]; 0 for fewer than two even lines.

    Regulated verse rhymes on the last character of every even line (the first line may rhyme too and is
    not judged). The score is (k - 1) / (m - 1), where m is the number of even lines and k the largest
    number of them whose last characters share a rhyme group (`RHYME_GROUPS`); for a quatrain it is 1 when
    lines 2 and 4 rhyme and 0 otherwise.
    """
    ends = [body[-1] for i, (body, _) in enumerate(poem_lines(text)) if i % 2 == 1 and body]
    if len(ends) < 2:
        return 0.0
    groups = [rhyme_groups(c) for c in ends]
    best = max((sum(g in gs for gs in groups) for g in set().union(*groups)), default=0)
    return max(0, best - 1) / (len(ends) - 1)


def poem_reward(text: str, form: str) -> float:
    """The mean of `poem_form_score` and `poem_rhyme_score`, in [0, 1]; 1 only for an exact, rhyming poem."""
    return (poem_form_score(text, form) + poem_rhyme_score(text)) / 2
