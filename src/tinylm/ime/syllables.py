"""Reading typed pinyin: the valid toneless syllables, and splitting what was typed into them.

A person types pinyin with or without spaces ("chuangqian" or "chuang qian"), with tone digits
("chuang2") or tone marks ("chuáng"), writing ü as "ü", "v" or "u:". Spaces, apostrophes ("xi'an") and
tone digits fix a syllable boundary; between them the letters may split several ways ("xian" is xian or
xi an), so the reading keeps every split (`Reading.spans`) and the decoder lets the language model choose.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache

from pypinyin.pinyin_dict import pinyin_dict

from ..errors import TinyLMError

TONE_MARKS = {"\u0300", "\u0301", "\u0304", "\u030c"}
"""Combining grave, acute, macron and caron: the four tone marks, dropped when reading."""
BOUNDARIES = set(" \t'’-12345")
"""Characters that end a syllable (tone digits 1-4, 5 for the neutral tone)."""
ALIASES = {"lue": "lve", "nue": "nve"}
"""Common spellings of lüe / nüe without the umlaut (j, q, x, y + u need no alias: they never take ü)."""
MAX_SYLLABLE = 6
"""Letters in the longest syllable (zhuang, chuang, shuang)."""


def toneless(reading: str) -> str:
    """A tone-marked reading from pypinyin's data in the typed form: no tone, ü as v ("lǜ" -> "lv")."""
    plain = "".join(c for c in unicodedata.normalize("NFD", reading) if c not in TONE_MARKS)
    return unicodedata.normalize("NFC", plain.replace("u\u0308", "v"))


@cache
def syllables() -> frozenset[str]:
    """Every toneless syllable some character reads as in pypinyin's data, ü written v.

    Readings without a vowel (the interjections m, n, ng, hm, hng) are left out: they would split ordinary
    syllables ("nan" as n an) for the sake of a handful of characters nobody types that way.
    """
    found = {toneless(r) for value in pinyin_dict.values() for r in value.split(",")}
    readable = {s for s in found if s.isascii() and s.isalpha() and any(v in s for v in "aeiouv")}
    return frozenset(readable | set(ALIASES))


def canonical(syllable: str) -> str:
    """The syllable under which the data files its characters ("lue" -> "lve")."""
    return ALIASES.get(syllable, syllable)


@dataclass(frozen=True)
class Reading:
    """Typed pinyin as letters plus every way to split them into syllables.

    `letters` are the lowercase toneless letters, ü as v; `origin[i]` is the index in `text` of letter i.
    `spans[i]` lists the ends j such that letters[i:j] is a syllable and a split can go on from j to the end;
    position 0 and every position in `spans` start a syllable of some complete split.
    """

    text: str
    letters: str
    origin: tuple[int, ...]
    spans: dict[int, tuple[int, ...]]

    def syllable(self, start: int, end: int) -> str:
        return canonical(self.letters[start:end])

    def splits(self, limit: int = 1000) -> list[list[str]]:
        """Every split into syllables (at most `limit`), fewest syllables first."""
        found: list[list[str]] = []

        def walk(i: int, path: list[str]) -> None:
            if len(found) >= limit:
                return
            if i == len(self.letters):
                found.append(path)
            for j in self.spans.get(i, ()):
                walk(j, [*path, self.letters[i:j]])

        walk(0, [])
        return sorted(found, key=len)

    def best_split(self) -> list[str]:
        """The split with the fewest syllables, longer syllables first on a tie ("xian", not "xi an")."""
        return min(self.splits(), key=lambda s: (len(s), [-len(x) for x in s]))


def _letters(text: str) -> tuple[str, list[int], set[int]]:
    """Lowercase toneless letters of `text`, each one's index in `text`, and the letter positions where a
    boundary forces a syllable to start."""
    letters: list[str] = []
    origin: list[int] = []
    cuts: set[int] = set()
    for i, ch in enumerate(text):
        if ch in BOUNDARIES:
            cuts.add(len(letters))
            continue
        if ch == ":" and letters and letters[-1] == "u":  # "lu:" is lü
            letters[-1] = "v"
            continue
        parts = unicodedata.normalize("NFD", ch.lower())
        base, marks = parts[0], set(parts[1:])
        if not ("a" <= base <= "z") or marks - TONE_MARKS - {"\u0308"}:
            raise TinyLMError(f'cannot read "{ch}" at position {i + 1} of "{text}": not a pinyin letter')
        letters.append("v" if base == "u" and "\u0308" in marks else base)
        origin.append(i)
    return "".join(letters), origin, cuts | {0, len(letters)}


def read_pinyin(text: str) -> Reading:
    """Split typed pinyin into syllables every way it can be; a TinyLMError names the part that cannot be read.

    Raises TinyLMError for empty input, a character that is not a pinyin letter, or letters that no split
    into syllables covers (`cannot read "xq" at position 5 of "mingxq"`, positions counted from 1).
    """
    letters, origin, cuts = _letters(text)
    if not letters:
        raise TinyLMError(f'"{text}" holds no pinyin; type syllables such as "ni hao" or "nihao"')
    n, valid = len(letters), syllables()

    def ends(i: int) -> list[int]:
        """Ends j of syllables letters[i:j] that cross no forced boundary."""
        out = []
        for j in range(i + 1, min(n, i + MAX_SYLLABLE) + 1):
            if letters[i:j] in valid:
                out.append(j)
            if j in cuts:
                break
        return out

    reach = [False] * (n + 1)  # reach[i]: letters[:i] splits into syllables
    reach[0] = True
    for i in range(n):
        if reach[i]:
            for j in ends(i):
                reach[j] = True
    finish = [False] * (n + 1)  # finish[i]: letters[i:] splits into syllables
    finish[n] = True
    for i in range(n - 1, -1, -1):
        finish[i] = any(finish[j] for j in ends(i))
    if not reach[n]:
        start = max(i for i in range(n) if reach[i])
        end = next(j for j in range(start + 1, n + 1) if finish[j])  # where reading can resume
        bad = text[origin[start] : origin[end - 1] + 1]
        raise TinyLMError(
            f'cannot read "{bad}" at position {origin[start] + 1} of "{text}": no pinyin syllable spells it'
        )
    spans = {i: tuple(j for j in ends(i) if finish[j]) for i in range(n) if reach[i] and finish[i]}
    return Reading(text, letters, tuple(origin), spans)
