"""Accuracy of `tinylm ime` on held-out Chinese text typed as toneless pinyin, beside the Pinyin2Hanzi package.

Held out: every Tang-300 poem (its lines) and a stable tenth of the review sentences (by a hash of the
text). The n-gram models are trained on the Tang poems minus any poem that shares a line with Tang-300,
plus the other nine tenths of the reviews. A "sentence" is a piece between punctuation marks whose
characters are all Chinese; its pinyin comes from pypinyin (`lazy_pinyin(..., style=Style.NORMAL)`),
one syllable per character, typed with spaces (and, for one row, without them).

Rows: our bigram and trigram (beam search), the trigram on unsegmented input, the trigram with the beam
reranked by a neural tinylm model (--neural), and Pinyin2Hanzi's DAG (phrase graph) and HMM decoders.
Character accuracy counts the characters right at their position; sentence accuracy the exact matches.

    .venv/bin/python benchmarks/ime_accuracy.py [--neural MODEL_DIR --neural-weight 1.0]
    .venv/bin/python benchmarks/ime_accuracy.py --train-poems 2000 --lines 20 --reviews 20   # a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pypinyin import Style, lazy_pinyin

from tinylm.errors import TinyLMError
from tinylm.ime.decode import InputMethod, NeuralScorer
from tinylm.ime.lattice import characters, phrases
from tinylm.ime.model import clauses, is_chinese
from tinylm.ngram import train_ngram

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh"
COMMAND = "python benchmarks/ime_accuracy.py " + " ".join(sys.argv[1:])
PUNCTUATION = re.compile(r"[\s，。！？、；：,.!?;:…~～“”‘’\"'（）()《》【】\[\]<>—\-]+")


def rows(name: str) -> Iterator[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def sentences(text: str, shortest: int = 2, longest: int = 30) -> list[str]:
    """The pieces of `text` between punctuation marks that are all Chinese and of a typable length."""
    return [p for p in PUNCTUATION.split(text) if shortest <= len(p) <= longest and is_chinese(p)]


def held_out_review(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] % 10 == 0


def spread(items: list[str], n: int) -> list[str]:
    """`n` items taken evenly across the list (all of them if it is shorter), so every part is sampled."""
    if len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def build_data(args) -> tuple[list[list[str]], dict[str, list[str]]]:
    """(training sequences, {test set name: held-out sentences})."""
    tang300 = ["".join(r["paragraphs"]) for r in rows("tang300.jsonl")]
    held_lines = {s for poem in tang300 for s in sentences(poem, shortest=5)}
    poems = ("".join(r["paragraphs"]) for r in rows("tang_poems.jsonl"))
    poems = (p for p in poems if not held_lines & set(sentences(p, shortest=5)))
    kept_poems = list(itertools.islice(poems, args.train_poems))
    reviews = [r["text"] for r in rows("review_sentiment.jsonl")]
    train_reviews = [t for t in reviews if not held_out_review(t)]
    test_reviews = [s for t in reviews if held_out_review(t) for s in sentences(t)]
    train = list(clauses(kept_poems + train_reviews))
    tests = {
        "Tang-300 lines": spread(sorted(held_lines), args.lines),
        "review sentences": spread(list(dict.fromkeys(test_reviews)), args.reviews),
    }
    print(
        f"training: {len(kept_poems):,} Tang poems + {len(train_reviews):,} reviews = {len(train):,} clauses, "
        f"{sum(map(len, train)):,} characters",
        file=sys.stderr,
    )
    return train, tests


def pinyin(sentence: str) -> list[str]:
    return lazy_pinyin(sentence, style=Style.NORMAL)


def ours(method: InputMethod, spaced: bool) -> Callable[[list[str]], str]:
    def convert(syllables: list[str]) -> str:
        try:
            return method.candidates((" " if spaced else "").join(syllables), top=1)[0].text
        except TinyLMError:  # a syllable outside the IME's set (m, n, ng): nothing typed comes out
            return ""

    return convert


def pinyin2hanzi() -> dict[str, Callable[[list[str]], str]]:
    from Pinyin2Hanzi import DefaultDagParams, DefaultHmmParams, dag, simplify_pinyin, viterbi

    dag_params, hmm_params = DefaultDagParams(), DefaultHmmParams()

    def by_dag(syllables: list[str]) -> str:
        try:
            found = dag(dag_params, [simplify_pinyin(s) for s in syllables], path_num=1)
        except KeyError:
            return ""
        return "".join(found[0].path) if found else ""

    def by_hmm(syllables: list[str]) -> str:
        try:
            found = viterbi(hmm_params, observations=[simplify_pinyin(s) for s in syllables], path_num=1)
        except KeyError:
            return ""
        return "".join(found[0].path) if found else ""

    return {"Pinyin2Hanzi DAG": by_dag, "Pinyin2Hanzi HMM": by_hmm}


def score(convert: Callable[[list[str]], str], sentences_: list[str]) -> tuple[float, float, float]:
    """(character accuracy, sentence accuracy, seconds per sentence)."""
    right = exact = total = 0
    start = time.perf_counter()
    for sentence in sentences_:
        out = convert(pinyin(sentence))
        right += sum(a == b for a, b in zip(out, sentence, strict=False))
        exact += out == sentence
        total += len(sentence)
    seconds = time.perf_counter() - start
    return right / total, exact / len(sentences_), seconds / len(sentences_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000, help="Held-out Tang-300 lines to type.")
    parser.add_argument("--reviews", type=int, default=1000, help="Held-out review sentences to type.")
    parser.add_argument("--train-poems", type=int, default=None, help="Use only the first N Tang poems.")
    parser.add_argument("--per-syllable", type=int, default=24)
    parser.add_argument("--beam", type=int, default=32)
    parser.add_argument("--neural", type=Path, default=None, help="tinylm model directory to rerank with.")
    parser.add_argument("--neural-weight", type=float, default=1.0)
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="Skip the Pinyin2Hanzi rows (its HMM takes ~0.7 s a sentence).",
    )
    args = parser.parse_args()

    train, tests = build_data(args)
    characters(), phrases()  # pypinyin's indexes, built once before any timing
    systems: dict[str, Callable[[list[str]], str]] = {}
    for order, name in ((2, "bigram"), (3, "trigram")):
        start = time.perf_counter()
        lm = train_ngram(train, order=order)
        print(f"{name}: {lm!r} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
        method = InputMethod(lm, per_syllable=args.per_syllable, beam=args.beam)
        systems[f"tinylm {name}"] = ours(method, spaced=True)
    systems["tinylm trigram, unsegmented input"] = ours(method, spaced=False)
    if args.neural is not None:
        rerank = InputMethod(lm, args.per_syllable, args.beam, NeuralScorer(args.neural), args.neural_weight)
        systems[f"tinylm trigram + neural (weight {args.neural_weight:g})"] = ours(rerank, spaced=True)
    if not args.ours_only:
        systems |= pinyin2hanzi()

    print(f"\n`{COMMAND}`\n")
    print(
        "| system | test set | sentences | characters | char accuracy | sentence accuracy | ms / sentence |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (set_name, sentences_), (name, convert) in itertools.product(tests.items(), systems.items()):
        chars, exact, seconds = score(convert, sentences_)
        n_chars = sum(map(len, sentences_))
        print(
            f"| {name} | {set_name} | {len(sentences_):,} | {n_chars:,} | {chars:.1%} | {exact:.1%} "
            f"| {seconds * 1000:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
