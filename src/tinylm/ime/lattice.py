"""What each span of typed syllables can be written as: single characters and whole phrases.

Characters come from pypinyin's character readings, phrases (several syllables at once) from its phrase
readings, both without tones. The lattice's nodes are letter positions of a `Reading` where a syllable
starts; an edge covers one syllable with one character, or several consecutive syllables with a phrase.
A phrase adds no score of its own: it keeps a rare character reachable inside a common word when the
per-syllable list of characters is cut to the most likely ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from pypinyin.phrases_dict import phrases_dict
from pypinyin.pinyin_dict import pinyin_dict

from .syllables import Reading, toneless

MAX_PHRASE = 6
"""Most syllables one phrase edge covers."""


@cache
def characters() -> dict[str, tuple[str, ...]]:
    """Toneless syllable -> every character that reads so (each character under all its readings)."""
    index: dict[str, list[str]] = defaultdict(list)
    for code, readings in pinyin_dict.items():
        for syllable in dict.fromkeys(toneless(r) for r in readings.split(",")):
            index[syllable].append(chr(code))
    return {s: tuple(chars) for s, chars in index.items()}


@cache
def phrases() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Toneless syllables -> the phrases of two or more characters that read so."""
    index: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for phrase, readings in phrases_dict.items():
        if 2 <= len(phrase) <= MAX_PHRASE and len(readings) == len(phrase):
            index[tuple(toneless(r[0]) for r in readings)].append(phrase)
    return {k: tuple(v) for k, v in index.items()}


@dataclass(frozen=True)
class Edge:
    """Letters [start, end) of the reading written as `text` (one character a syllable)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Lattice:
    """Every edge of a reading, by the position it starts at; a path from 0 to `end` is a candidate."""

    reading: Reading
    edges: dict[int, tuple[Edge, ...]]

    @property
    def end(self) -> int:
        return len(self.reading.letters)

    def nodes(self) -> list[int]:
        """Start positions in increasing order (every edge leads to a later one)."""
        return sorted(self.edges)


def _phrase_edges(
    reading: Reading, start: int, words: dict[tuple[str, ...], tuple[str, ...]], keep: Callable[[str], bool]
) -> list[Edge]:
    """Edges for the phrases that read as some run of 2 to MAX_PHRASE syllables beginning at `start`."""
    found: list[Edge] = []

    def walk(at: int, key: tuple[str, ...]) -> None:
        if len(key) >= 2:
            found.extend(Edge(start, at, p) for p in words.get(key, ()) if all(map(keep, p)))
        if len(key) < MAX_PHRASE:
            for nxt in reading.spans.get(at, ()):
                walk(nxt, (*key, reading.syllable(at, nxt)))

    walk(start, ())
    return found


def build_lattice(
    reading: Reading,
    keep: Callable[[str], bool] = lambda ch: True,
    rank: Callable[[str], float] | None = None,
    per_syllable: int | None = None,
) -> Lattice:
    """The lattice of `reading`: for each syllable its characters, for each run of syllables its phrases.

    Args:
        reading: The split typed pinyin (`read_pinyin`).
        keep: Which characters may appear (e.g. those the language model knows); a phrase needs all of its own.
            A syllable none of whose characters is kept keeps them all, so every split has a path.
        rank: Orders a syllable's characters, higher first (e.g. unigram log-probability).
        per_syllable: Keep only this many characters per syllable (after `rank`); phrases are not cut.
    """
    chars, words = characters(), phrases()
    edges: dict[int, list[Edge]] = defaultdict(list)
    for start, ends in reading.spans.items():
        for end in ends:
            every = chars.get(reading.syllable(start, end), ())
            options = [c for c in every if keep(c)] or list(every)  # nothing kept: better unknown than none
            if rank is not None:
                options.sort(key=rank, reverse=True)
            edges[start] += [Edge(start, end, c) for c in options[:per_syllable]]

        edges[start] += _phrase_edges(reading, start, words, keep)
    return Lattice(reading, {i: tuple(dict.fromkeys(e)) for i, e in edges.items()})
