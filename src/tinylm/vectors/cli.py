"""The `tinylm vectors` verbs: train word vectors, and ask any vectors (or a model's embeddings) questions."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from ..data.readers import read_documents
from ..errors import TinyLMError
from ..io import check_out_dir
from .evaluate import LIMIT, analogies, reference_file, word_pairs
from .keyed import WordVectors, open_vectors
from .sgns import SGNSConfig, train_sgns
from .text import Unit, sentences
from .vocab import encode


def train_vectors(
    data: str,
    out: str,
    unit: Unit = "word",
    dim: int = 100,
    window: int = 5,
    negative: int = 5,
    min_count: int = 5,
    epochs: int = 5,
    sample: float = 1e-3,
    alpha: float = 0.025,
    batch_size: int = 1024,
    seed: int = 0,
    threads: int | None = None,
    field: str | None = None,
    template: str | None = None,
    overwrite: bool = False,
) -> WordVectors:
    """Train word vectors (word2vec skip-gram with negative sampling) on a corpus.

    Args:
        data: Corpus: a file, directory, glob or embedded corpus name (`tinylm data list`).
        out: Output directory for vectors.safetensors, vocab.json and training.json.
        unit: How lines are cut into words: `word` (English and other spaced text), `char` (each Chinese
            character), `jieba` (Chinese words).
        dim: Vector size.
        window: Largest distance between a word and its context (each word draws its own 1..window).
        negative: Noise words per (word, context) pair.
        min_count: Words seen fewer times are dropped.
        epochs: Passes over the corpus.
        sample: Subsampling threshold for frequent words (0 keeps every word).
        alpha: Initial learning rate, falling linearly to alpha * 1e-4.
        batch_size: (word, context) pairs per SGD step.
        seed: Fixes subsampling, windows, negatives and initial vectors.
        threads: CPU threads for torch (default: torch's choice).
        field: JSONL field holding the text (default: the corpus's template, else "text").
        template: JSONL template such as "{title}\\n{text}" instead of a field.
        overwrite: Replace an existing output directory.
    """
    config = SGNSConfig(dim, window, negative, epochs, sample, alpha, batch_size, seed)
    if min_count < 1:
        raise TinyLMError(f"min_count must be a positive integer, got {min_count}")
    if threads is not None and threads < 1:
        raise TinyLMError(f"threads must be a positive integer, got {threads}")
    check_out_dir(out, None, overwrite)
    corpus = encode(sentences(read_documents(data, field, template), unit), min_count)
    print(f"{data}: {corpus.raw_tokens:,} words, {len(corpus.vocab.words):,} seen at least {min_count} times")
    with torch_threads(threads):
        matrix, stats = train_sgns(corpus, config)
    meta = {
        "data": data,
        "unit": unit,
        "min_count": min_count,
        **dataclasses.asdict(config),
        "words": corpus.raw_tokens,
        "vocab_size": len(corpus.vocab.words),
        "pairs": stats.pairs,
        "loss_per_epoch": stats.losses,
        "seconds": round(stats.seconds, 2),
        "words_per_second": round(stats.words_per_second),
    }
    vectors = WordVectors(corpus.vocab.words, matrix, corpus.vocab.counts.tolist(), out)
    vectors.save(out, meta)
    losses = ", ".join(f"{x:.3f}" for x in stats.losses)
    print(f"trained in {stats.seconds:.1f}s ({stats.words_per_second:,.0f} words/s); loss by epoch: {losses}")
    print(f"saved {len(vectors):,} vectors of size {dim} in {out}")
    return vectors


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` CPU threads in torch (None: as they are), restoring the count afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def show(word: str) -> str:
    """A word as printed: quoted if it has surrounding spaces (BPE tokens) or is empty."""
    return word if word and word.strip() == word else repr(word)


def vectors_neighbours(vectors: str, word: str, k: int = 10) -> list[tuple[str, float]]:
    """Print the words nearest to WORD (cosine similarity) in word vectors or a model's embeddings.

    Args:
        vectors: A vectors directory (`tinylm vectors train`) or a model directory (its input embeddings).
        word: The word to look up (case-insensitive when no exact match).
        k: How many neighbours.
    """
    found = open_vectors(vectors).neighbours(word, k)
    for w, score in found:
        print(f"{score:.4f}  {show(w)}")
    return found


def vectors_analogy(vectors: str, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
    """Print answers to "A is to B as C is to ?" (the words nearest to B - A + C, the three excluded).

    Args:
        vectors: A vectors directory (`tinylm vectors train`) or a model directory (its input embeddings).
        a: A, as in man.
        b: B, as in king.
        c: C, as in woman.
        k: How many answers.
    """
    found = open_vectors(vectors).analogy(a, b, c, k)
    for w, score in found:
        print(f"{score:.4f}  {show(w)}")
    return found


def vectors_eval(
    vectors: str, pairs: str | None = None, questions: str | None = None, limit: int = LIMIT
) -> dict[str, float]:
    """Score word vectors (or a model's embeddings) on WordSim-353 (Spearman) and the Google analogies.

    Args:
        vectors: A vectors directory (`tinylm vectors train`) or a model directory (its input embeddings).
        pairs: Word pairs with human scores, tab-separated (default: gensim's wordsim353.tsv if installed).
        questions: Analogy questions in word2vec's format (default: gensim's questions-words.txt).
        limit: Only the first (most frequent) LIMIT words take part, as gensim's restrict_vocab.
    """
    if limit < 1:
        raise TinyLMError(f"limit must be a positive integer, got {limit}")
    pairs = pairs or reference_file("wordsim353.tsv")
    questions = questions or reference_file("questions-words.txt")
    if pairs is None or questions is None:
        raise TinyLMError(
            "no test files: pass --pairs wordsim353.tsv and --questions questions-words.txt "
            "(gensim's test data holds both: pip install gensim)"
        )
    found = open_vectors(vectors)
    sim, ana = word_pairs(found, pairs, limit), analogies(found, questions, limit)
    print(f"WordSim-353 Spearman: {sim.spearman:.4f} on {sim.used}/{sim.total} pairs ({pairs})")
    print(
        f"Google analogies: {ana.accuracy:.4f} ({ana.correct}/{ana.used} answered of {ana.total}) ({questions})"
    )
    for kind, sections in (
        ("semantic", [s for s in ana.sections if not s.startswith("gram")]),
        ("syntactic", [s for s in ana.sections if s.startswith("gram")]),
    ):
        right, asked = (sum(ana.sections[s][i] for s in sections) for i in (0, 1))
        if asked:
            print(f"  {kind}: {right / asked:.4f} ({right}/{asked})")
    return {
        "wordsim_spearman": sim.spearman,
        "wordsim_coverage": sim.used / sim.total if sim.total else 0.0,
        "analogy_accuracy": ana.accuracy,
        "analogy_coverage": ana.used / ana.total if ana.total else 0.0,
    }
