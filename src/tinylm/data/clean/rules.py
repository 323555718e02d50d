"""Quality rules of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020), with datatrove's names and defaults.

Each rule is a function named after the reason datatrove's `GopherQualityFilter` / `C4QualityFilter`
gives when it drops a document, and rules run in datatrove's order; the first that fires is the reason.
A setting of None (or 0, or -1 for C4's counts, as in datatrove) switches its rule off.

Gopher counts words; C4 drops lines, then counts sentences in what is left, and writes the document back
without the dropped lines (as datatrove does). Words and sentences come from `words.py`, so a document
datatrove would split differently with NLTK's Punkt can get another verdict near a threshold.

Text written without spaces (Chinese, Japanese; `words.is_unsegmented`) has no words to count, so there:
- a word is one Han or kana character: `gopher_short_doc` (50 words) means 50 characters, which drops most
  five-character quatrains (20 characters and a title) -- lower `min_doc_words` for poetry;
- `gopher_below_avg_threshold` / `gopher_above_avg_threshold` (mean word length 3 to 10) would drop every
  document, and `gopher_enough_stop_words` looks for English words, so these three are not applied;
- C4 counts a line's words as characters and also accepts Chinese terminal marks (。！？ and closing
  quotes) as the end of a line and of a sentence; a five-character quatrain is two sentences, so
  `too_few_sentences` (5) drops it -- set `min_num_sentences` to -1 for poetry.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .words import is_unsegmented, sentence_spans, split_words

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


@dataclass
class GopherRules:
    """Gopher's document rules (datatrove's `GopherQualityFilter` parameters and defaults)."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    """The least share of words holding a letter (datatrove's name, though it is a minimum)."""
    min_stop_words: int | None = 2
    stop_words: list[str] = field(default_factory=lambda: list(STOP_WORDS))


@dataclass
class C4Rules:
    """C4's line and document rules (datatrove's `C4QualityFilter` parameters and defaults, lines split on
    newlines as in the paper)."""

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass
class Words:
    """What the Gopher rules look at: the text, its lines, its words and those that are not all symbols."""

    text: str
    unsegmented: bool
    lines: list[str]
    words: list[str]
    content: list[str]

    @classmethod
    def of(cls, text: str) -> Words:
        words = split_words(text)
        content = [w for w in words if any(c.isalnum() for c in w)]
        return cls(text, is_unsegmented(text), text.splitlines(), words, content)

    def mean_length(self) -> float:
        return sum(map(len, self.content)) / len(self.content) if self.content else 0.0


def gopher_short_doc(d: Words, c: GopherRules) -> bool:
    return bool(c.min_doc_words) and len(d.content) < c.min_doc_words


def gopher_long_doc(d: Words, c: GopherRules) -> bool:
    return bool(c.max_doc_words) and len(d.content) > c.max_doc_words


def gopher_below_avg_threshold(d: Words, c: GopherRules) -> bool:
    return bool(c.min_avg_word_length) and not d.unsegmented and d.mean_length() < c.min_avg_word_length


def gopher_above_avg_threshold(d: Words, c: GopherRules) -> bool:
    return bool(c.max_avg_word_length) and not d.unsegmented and d.mean_length() > c.max_avg_word_length


def gopher_too_many_hashes(d: Words, c: GopherRules) -> bool:
    return bool(c.max_symbol_word_ratio) and d.text.count("#") / len(d.words) > c.max_symbol_word_ratio


def gopher_too_many_ellipsis(d: Words, c: GopherRules) -> bool:
    ellipses = d.text.count("...") + d.text.count("…")
    return bool(c.max_symbol_word_ratio) and ellipses / len(d.words) > c.max_symbol_word_ratio


def gopher_too_many_bullets(d: Words, c: GopherRules) -> bool:
    bullets = sum(s.lstrip().startswith(("•", "-")) for s in d.lines)
    return bool(c.max_bullet_lines_ratio) and bullets / len(d.lines) > c.max_bullet_lines_ratio


def gopher_too_many_end_ellipsis(d: Words, c: GopherRules) -> bool:
    ending = sum(s.rstrip().endswith(("...", "…")) for s in d.lines)
    return bool(c.max_ellipsis_lines_ratio) and ending / len(d.lines) > c.max_ellipsis_lines_ratio


def gopher_below_alpha_threshold(d: Words, c: GopherRules) -> bool:
    alpha = sum(any(ch.isalpha() for ch in w) for w in d.words)
    return bool(c.max_non_alpha_words_ratio) and alpha / len(d.words) < c.max_non_alpha_words_ratio


def gopher_enough_stop_words(d: Words, c: GopherRules) -> bool:
    found = set(c.stop_words) & set(d.words)
    return bool(c.min_stop_words) and not d.unsegmented and len(found) < c.min_stop_words


GOPHER: list[Callable[[Words, GopherRules], bool]] = [
    gopher_short_doc,
    gopher_long_doc,
    gopher_below_avg_threshold,
    gopher_above_avg_threshold,
    gopher_too_many_hashes,
    gopher_too_many_ellipsis,
    gopher_too_many_bullets,
    gopher_too_many_end_ellipsis,
    gopher_below_alpha_threshold,
    gopher_enough_stop_words,
]
"""In datatrove's order; a rule's name is the reason it gives."""


def gopher(text: str, rules: GopherRules) -> str | None:
    """The name of the first Gopher rule `text` breaks, or None if it passes them all."""
    doc = Words.of(text)
    if not doc.words:
        return gopher_short_doc.__name__
    return next((rule.__name__ for rule in GOPHER if rule(doc, rules)), None)


CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
END_PUNCTUATION_UNSEGMENTED = (*END_PUNCTUATION, "。", "！", "？", "”", "’", "」", "』")
POLICY_SUBSTRINGS = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
]
C4_LINE_RULES = ("too_long_word", "no_terminal_punc", "too_few_words", "javascript", "policy")
"""Rules that drop a line, not the document; counted as `line-filter-<name>` like datatrove's stats."""


@dataclass
class C4Verdict:
    text: str
    """The document without the lines C4 dropped."""
    reason: str | None
    """`lorem_ipsum`, `curly_bracket` or `too_few_sentences`, or None if the document is kept."""
    lines: Counter
    """Lines dropped per line rule."""


def c4(text: str, rules: C4Rules) -> C4Verdict:
    """C4's rules over the lines of `text`: each line kept or dropped, then the document kept or dropped."""
    unsegmented = is_unsegmented(text)
    ends = END_PUNCTUATION_UNSEGMENTED if unsegmented else END_PUNCTUATION
    dropped: Counter = Counter()
    kept, sentences = [], 0
    for raw in text.splitlines():
        line = raw.strip()
        words = split_words(line) if unsegmented else line.split()
        if rules.max_word_length != -1 and any(len(w) > rules.max_word_length for w in words):
            dropped["too_long_word"] += 1
            continue
        if rules.remove_citations:
            line = CITATION.sub("", line)
        if rules.filter_no_terminal_punct and (not line.endswith(ends) or line.endswith("...")):
            dropped["no_terminal_punc"] += 1
            continue
        if len(words) < rules.min_words_per_line:
            dropped["too_few_words"] += 1
            continue
        lower = line.lower()
        if rules.filter_lorem_ipsum and "lorem ipsum" in lower:
            return C4Verdict(text, "lorem_ipsum", dropped)
        if rules.filter_javascript and "javascript" in lower:
            dropped["javascript"] += 1
            continue
        if rules.filter_curly_bracket and "{" in line:
            return C4Verdict(text, "curly_bracket", dropped)
        if rules.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
            dropped["policy"] += 1
            continue
        if rules.min_num_sentences != -1:
            sentences += max(1, len(sentence_spans(line)))
        kept.append(line)
    reason = "too_few_sentences" if sentences < rules.min_num_sentences else None
    return C4Verdict("\n".join(kept).strip(), reason, dropped)
