"""`tinylm ime`: pinyin to ranked Chinese candidates, for one input or typed interactively.

Interactively, each line is either pinyin (its candidates are listed, numbered) or the number of a
candidate just listed (it is appended to the text being composed). "-" takes back the last piece; an
empty line or Ctrl-D ends and prints the composed text.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from jsonargparse import ArgumentParser

from ..errors import TinyLMError
from .decode import Candidate, InputMethod, NeuralScorer
from .model import DEFAULT_CORPORA, load_ngram

GREETING = (
    "tinylm ime: type pinyin (e.g. chuang qian ming yue guang, or chuangqian) and Enter, then a candidate's\n"
    'number to add it to your text; "-" takes back the last piece; an empty line or Ctrl-D ends.\n'
)


def show(candidates: list[Candidate]) -> str:
    """The candidates on one line, numbered from 1."""
    return "  ".join(f"{i}. {c.text}" for i, c in enumerate(candidates, 1))


class Composer:
    """The interactive session: the text composed so far and the candidates last listed."""

    def __init__(self, method: InputMethod, top: int) -> None:
        self.method, self.top = method, top
        self.pieces: list[str] = []
        self.listed: list[Candidate] = []

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def handle(self, line: str) -> str:
        """Act on one typed line; what to show."""
        line = line.strip()
        if line == "-":
            if self.pieces:
                self.pieces.pop()
            return f"text: {self.text}"
        if line.isdigit():
            if not 1 <= int(line) <= len(self.listed):
                raise TinyLMError(
                    f"no candidate {line}; type 1 to {len(self.listed)}"
                    if self.listed
                    else "type pinyin first, then a candidate's number"
                )
            self.pieces.append(self.listed[int(line) - 1].text)
            self.listed = []
            return f"text: {self.text}"
        self.listed = self.method.candidates(line, self.top)
        return show(self.listed)

    def run(self, read: Callable[[str], str], out: TextIO) -> None:
        """The read-show loop; `read` is `input` in a terminal."""
        out.write(GREETING)
        while True:
            try:
                line = read("number or pinyin> " if self.listed else "pinyin> ")
            except EOFError:
                out.write("\n")
                break
            if not line.strip():
                break
            try:
                out.write(self.handle(line) + "\n")
            except TinyLMError as e:
                out.write(f"error: {e}\n")
            out.flush()
        out.write(f"{self.text}\n")


def add_ime_options(parser: ArgumentParser) -> None:
    """`tinylm ime`'s options: the pinyin as an optional positional argument, a plain --interactive flag,
    and the rest from `ime`'s signature."""
    parser.add_argument("text", nargs="?", default=None, help="Pinyin to convert, e.g. 'chuang qian'.")
    parser.add_argument(
        "--interactive", action="store_true", help="Type pinyin and pick candidates in the terminal."
    )
    parser.add_function_arguments(ime, skip={"text", "interactive"})


def ime(
    text: str | None = None,
    interactive: bool = False,
    ngram: Path | None = None,
    corpus: str | list[str] | None = None,
    order: int = 3,
    top: int = 5,
    beam: int = 32,
    per_syllable: int = 24,
    neural: Path | None = None,
    neural_weight: float = 1.0,
) -> None:
    """Turn pinyin into ranked Chinese candidates, with or without tones and spaces, or interactively.

    Args:
        text: Pinyin such as "chuang qian ming yue guang", "chuangqianmingyueguang" or "chuáng2 qián".
        interactive: Read pinyin from the terminal, list candidates, pick them by number into a text.
        ngram: A character n-gram model saved by `tinylm ngram train`; by default one trained on `corpus`
            (once, then cached under $TINYLM_CACHE, $XDG_CACHE_HOME/tinylm or ~/.cache/tinylm).
        corpus: Embedded corpus names or paths the default model is trained on (their runs of Chinese
            characters): one, or a list such as '[tang, my.jsonl]'; by default the embedded Tang poems and Tang-300.
        order: Order of the default model (2 = bigram, 3 = trigram); a model from --ngram keeps its own.
        top: How many candidates to list.
        beam: Distinct partial texts kept at each syllable boundary while searching.
        per_syllable: Characters kept per syllable, the likeliest under the model.
        neural: A tinylm model directory whose log-probability of each candidate reranks the beam.
        neural_weight: Weight of the neural log-probability beside the n-gram one.
    """
    for name, value in (("top", top), ("beam", beam), ("per_syllable", per_syllable), ("order", order)):
        if value < 1:
            raise TinyLMError(f"--{name} must be at least 1, got {value}")
    if text is None and not interactive:
        raise TinyLMError('give the pinyin to convert (tinylm ime "ni hao") or --interactive')
    method = InputMethod(
        load_ngram(ngram, [corpus] if isinstance(corpus, str) else corpus or DEFAULT_CORPORA, order),
        per_syllable=per_syllable,
        beam=beam,
        neural=NeuralScorer(neural) if neural is not None else None,
        neural_weight=neural_weight,
    )
    if text is not None:
        for i, c in enumerate(method.candidates(text, top), 1):
            neural_part = "" if c.neural is None else f"\tneural {c.neural:.2f}\ttotal {c.total:.2f}"
            print(f"{i}\t{c.text}\t{c.score:.2f}{neural_part}")
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (gives input() line editing and history)
        Composer(method, top).run(input, sys.stdout)
