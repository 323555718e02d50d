"""tinylm's word2vec (SGNS in PyTorch) beside gensim's Word2Vec (C, sg=1, hs=0), same corpus, same settings.

    .venv/bin/python benchmarks/word_vectors.py [--data kjv shakespeare] [--unit word] [--dim 100]
        [--window 5] [--negative 5] [--min-count 5] [--epochs 5] [--sample 1e-3] [--threads 2]
        [--torch-threads N] [--max-words N] [--seed 0]

Both read the same sentences (tinylm's readers and word split: lowercased, one sentence per line) and train
with the same settings; tinylm with `threads` torch threads (or `--torch-threads`: its batches are small
ops, and on a busy machine one thread can beat two), gensim with `workers=threads`. Training time is
the training alone (vocabulary building excluded for both); words/s is epochs x corpus words / that time.
Both vector sets are scored by the same code (`tinylm.vectors.evaluate`, which matches gensim's
`evaluate_word_pairs` / `evaluate_word_analogies`, see tests/test_vectors.py) on gensim's copies of
WordSim-353 and the Google analogies, with the coverage each vocabulary allows.

The KJV Bible and Shakespeare together are about 1.7M words, far smaller than the corpora published scores
come from (billions of words), so absolute numbers are low; the point is the side-by-side. `--max-words`
cuts the corpus for a smoke run.
"""

from __future__ import annotations

import argparse
import time

import torch

from tinylm.data.readers import read_documents
from tinylm.vectors import WordVectors
from tinylm.vectors.evaluate import analogies, reference_file, word_pairs
from tinylm.vectors.sgns import SGNSConfig, train_sgns
from tinylm.vectors.text import sentences
from tinylm.vectors.vocab import encode


def corpus(sources: list[str], unit: str, max_words: int | None) -> list[list[str]]:
    """The sentences of all sources, cut after about `max_words` words if given."""
    lines = (s for source in sources for s in sentences(read_documents(source), unit))
    if max_words is None:
        return list(lines)
    total, out = 0, []
    for s in lines:
        if total >= max_words:
            break
        out.append(s)
        total += len(s)
    return out


def train_tinylm(lines: list[list[str]], args: argparse.Namespace) -> tuple[WordVectors, float]:
    torch.set_num_threads(args.torch_threads or args.threads)
    encoded = encode(lines, args.min_count)
    config = SGNSConfig(args.dim, args.window, args.negative, args.epochs, args.sample, seed=args.seed)
    matrix, stats = train_sgns(encoded, config)
    return WordVectors(encoded.vocab.words, matrix), stats.seconds


def train_gensim(lines: list[list[str]], args: argparse.Namespace) -> tuple[WordVectors, float]:
    from gensim.models import Word2Vec

    model = Word2Vec(
        vector_size=args.dim, window=args.window, negative=args.negative, min_count=args.min_count,
        sample=args.sample, sg=1, hs=0, workers=args.threads, seed=args.seed,
    )  # fmt: skip
    model.build_vocab(lines)
    start = time.perf_counter()
    model.train(lines, total_examples=model.corpus_count, epochs=args.epochs)
    seconds = time.perf_counter() - start
    return WordVectors(list(model.wv.index_to_key), model.wv.vectors), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["kjv", "shakespeare"])
    parser.add_argument("--unit", default="word", choices=["word", "char", "jieba"])
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2, help="gensim workers, and torch threads by default")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch threads for tinylm if not --threads"
    )
    parser.add_argument("--max-words", type=int, default=None, help="cut the corpus (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs, questions = reference_file("wordsim353.tsv"), reference_file("questions-words.txt")
    if pairs is None or questions is None:
        raise SystemExit(
            "gensim's test data (wordsim353.tsv, questions-words.txt) is needed: pip install gensim"
        )
    lines = corpus(args.data, args.unit, args.max_words)
    words = sum(len(s) for s in lines)
    print(f"corpus {' + '.join(args.data)}: {len(lines):,} sentences, {words:,} words ({args.unit})")
    print(
        f"settings: dim {args.dim}, window {args.window}, negative {args.negative}, min_count {args.min_count}, "
        f"epochs {args.epochs}, sample {args.sample}, gensim workers {args.threads}, "
        f"torch threads {args.torch_threads or args.threads}\n"
    )
    print(
        "| trainer | vocab | train s | words/s | WordSim-353 Spearman (pairs) | Google analogies (answered) |"
    )
    print("|---|---|---|---|---|---|")
    for name, trainer in (("tinylm SGNS (torch)", train_tinylm), ("gensim Word2Vec sg=1 hs=0", train_gensim)):
        vectors, seconds = trainer(lines, args)
        sim, ana = word_pairs(vectors, pairs), analogies(vectors, questions)
        print(
            f"| {name} | {len(vectors):,} | {seconds:.1f} | {args.epochs * words / seconds:,.0f} "
            f"| {sim.spearman:.3f} ({sim.used}/{sim.total}) | {ana.accuracy:.3f} ({ana.used}/{ana.total}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
