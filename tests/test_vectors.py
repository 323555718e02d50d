"""Word vectors: SGNS learns planted structure and repeats under a seed; lookups, analogies and files are
exact; the scores follow gensim's rules (checked against scipy, hand counts and gensim itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer
from tinylm.vectors import WordVectors, open_vectors
from tinylm.vectors.evaluate import analogies, read_analogies, spearman, word_pairs
from tinylm.vectors.sgns import SGNSConfig, train_sgns, window_pairs
from tinylm.vectors.text import sentences
from tinylm.vectors.vocab import encode

TOPICS = {
    "farm": "cow sheep barn hay plough field goat horse",
    "sea": "ship sail wave anchor harbour tide mast oar",
}


def topic_corpus(lines: int = 400, seed: int = 0) -> list[list[str]]:
    """Sentences of eight words, each from one topic: words of a topic share contexts, the topics none."""
    rng = np.random.default_rng(seed)
    topics = [t.split() for t in TOPICS.values()]
    return [list(rng.choice(topics[i % 2], 8)) for i in range(lines)]


def train(seed: int = 0, epochs: int = 4) -> tuple[WordVectors, list[float]]:
    corpus = encode(topic_corpus(), min_count=1)
    config = SGNSConfig(dim=16, window=3, negative=3, epochs=epochs, sample=0, batch_size=64, seed=seed)
    matrix, stats = train_sgns(corpus, config, progress=False)
    return WordVectors(corpus.vocab.words, matrix), stats.losses


def same_topic_share(vectors: WordVectors, k: int = 5) -> float:
    topic = {w: name for name, words in TOPICS.items() for w in words.split()}
    hits = [topic[n] == topic[w] for w in topic for n, _ in vectors.neighbours(w, k)]
    return sum(hits) / len(hits)


def test_sgns_learns_the_planted_topics_and_loss_falls(one_thread) -> None:
    vectors, losses = train()
    assert losses[-1] < losses[0]
    assert same_topic_share(vectors) >= 0.95
    rng = np.random.default_rng(0)
    assert same_topic_share(WordVectors(vectors.words, rng.normal(size=vectors.vectors.shape))) < 0.8


def test_sgns_is_deterministic_under_a_seed(one_thread) -> None:
    (a, _), (b, _), (c, _) = train(epochs=1), train(epochs=1), train(seed=1, epochs=1)
    assert np.array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)


def test_windows_stay_in_their_sentence_and_reach() -> None:
    sentence = np.array([0, 0, 0, 1, 1, 1, 1])
    centers, contexts = window_pairs(sentence, 2, np.random.default_rng(0))
    assert len(centers) and (sentence[centers] == sentence[contexts]).all()
    assert 1 <= np.abs(centers - contexts).max() <= 2
    full = window_pairs(sentence, 1, np.random.default_rng(0))  # radius 1 always: every neighbour pair
    assert sorted(zip(*full, strict=True)) == [
        (0, 1),
        (1, 0),
        (1, 2),
        (2, 1),
        (3, 4),
        (4, 3),
        (4, 5),
        (5, 4),
        (5, 6),
        (6, 5),
    ]


def test_vocab_counts_drops_rare_words_and_subsamples_by_word2vec() -> None:
    corpus = encode([["b", "a", "a", "c"], ["a", "b", "rare"]], min_count=2)
    assert corpus.vocab.words == ["a", "b"] and corpus.vocab.counts.tolist() == [3, 2]
    assert corpus.ids.tolist() == [1, 0, 0, 0, 1] and corpus.sentence.tolist() == [0, 0, 0, 1, 1]
    assert corpus.raw_tokens == 7
    t = 0.1 * 5
    expected = [min(1.0, (np.sqrt(f / t) + 1) * t / f) for f in (3, 2)]
    assert np.allclose(corpus.vocab.keep_probabilities(0.1), expected)
    assert np.allclose(corpus.vocab.noise_cdf(), np.cumsum([3**0.75, 2**0.75]) / (3**0.75 + 2**0.75))
    with pytest.raises(TinyLMError, match="no words"):
        encode([], min_count=1)
    with pytest.raises(TinyLMError, match="min_count=5"):
        encode([["a", "b"]], min_count=5)


def test_text_units() -> None:
    assert list(sentences(["To be, or NOT to be:\n\n'tis o'er"])) == [
        ["to", "be", "or", "not", "to", "be"],
        ["tis", "o'er"],
    ]
    assert list(sentences(["床前明月光，疑是地上霜。"], "char")) == [list("床前明月光疑是地上霜")]
    assert list(sentences(["我爱北京天安门。"], "jieba")) == [["我", "爱", "北京", "天安门"]]


def hand_made() -> WordVectors:
    words = ["man", "woman", "king", "queen", "apple"]
    return WordVectors(words, np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1], [-1, -1, 0.2]]))


def test_analogy_is_3cosadd_without_the_query_words() -> None:
    vectors = hand_made()
    (best, score), *_ = vectors.analogy("man", "king", "woman", k=2)
    target = vectors.unit[2] - vectors.unit[0] + vectors.unit[1]
    assert best == "queen" and score == pytest.approx(vectors.unit[3] @ target / np.linalg.norm(target))
    # b - a + c is c itself here; the answer must still be another word
    assert [w for w, _ in vectors.analogy("king", "king", "queen", k=5)] == ["woman", "man", "apple"]
    # only the first three words may answer; apple (a query word) is beyond them
    assert [w for w, _ in vectors.analogy("man", "king", "apple", k=5, limit=3)] == ["woman"]
    assert vectors.neighbours("king", 1)[0][0] in {"man", "queen"}
    assert vectors.similarity("man", "woman") == pytest.approx(0.0)
    assert vectors.lookup("KING") == 2
    with pytest.raises(TinyLMError, match="did you mean king"):
        vectors.neighbours("kinq")


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    vectors = hand_made()
    vectors.save(tmp_path / "v", {"note": 1})
    back = open_vectors(tmp_path / "v")
    assert back.words == vectors.words and np.array_equal(back.vectors, vectors.vectors)
    with pytest.raises(TinyLMError, match="neither a vectors directory"):
        open_vectors(tmp_path)


def test_a_models_embeddings_are_vectors(tiny_checkpoint) -> None:
    from tinylm.models import load_model

    vectors = open_vectors(tiny_checkpoint)
    table = load_model(tiny_checkpoint).embed.weight.detach().numpy()
    tokenizer = Tokenizer.load(tiny_checkpoint)
    assert len(vectors) == tokenizer.vocab_size and np.array_equal(vectors.vectors, table[: len(vectors)])
    the = tokenizer.encode(" the")
    assert len(the) == 1 and vectors.lookup("the") == the[0]  # " the" answers to "the"
    assert len(vectors.neighbours("the", 3)) == 3


def test_spearman_matches_scipy_with_ties() -> None:
    from scipy.stats import spearmanr

    x = np.array([1.0, 2.0, 2.0, 5.0, 3.0, 0.5, 2.0])
    y = np.array([0.3, 0.1, 0.4, 0.9, 0.9, 0.0, 0.2])
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_pair_and_analogy_scores_by_hand(tmp_path) -> None:
    vectors = hand_made()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# a comment\nMan\tWoman\t1\nking\tqueen\t9\nman\tking\t5\nman\tunicorn\t3\n")
    score = word_pairs(vectors, pairs)
    assert (score.used, score.total) == (3, 4)
    # cosines 0, 0.5, 0.707 (ranks 1 2 3) against scores 1, 9, 5 (ranks 1 3 2): 1 - 6 * 2 / (3 * 8)
    assert score.spearman == pytest.approx(0.5)
    questions = tmp_path / "q.txt"
    questions.write_text(
        ": royal\nman king woman queen\nwoman queen man king\n: fruit\nman apple woman king\nman x y z\n"
    )
    assert read_analogies(questions)[0] == ("royal", ["man", "king", "woman", "queen"])
    result = analogies(vectors, questions)
    assert (result.correct, result.used, result.total) == (2, 3, 4)
    assert result.sections == {"royal": (2, 2), "fruit": (0, 1)}


def planted_analogies(tmp_path) -> tuple[WordVectors, object, object]:
    """Vectors where y_i = x_i + offset + noise, some Mixed-Case twins and some words missing; with the
    questions "x_i y_i x_j y_j" (partly answerable) and the real WordSim-353 pairs."""
    from gensim.test.utils import datapath

    rng = np.random.default_rng(0)
    n, dim = 60, 12
    x = rng.normal(size=(n, dim))
    y = x + rng.normal(size=dim) * 2 + rng.normal(size=(n, dim)) * 1.2
    words = [f"x{i}" for i in range(n)] + [f"y{i}" for i in range(n)]
    matrix = np.concatenate([x, y])
    twins = [f"X{i}" for i in range(0, n, 7)]  # later rows: the first (lower-case) spelling must win
    pair_words = sorted({w.lower() for a, b, _ in _pairs(datapath("wordsim353.tsv")) for w in (a, b)})
    kept = [w for w in pair_words if rng.random() < 0.9]
    words += twins + kept
    matrix = np.concatenate([matrix, rng.normal(size=(len(twins) + len(kept), dim))])
    questions = tmp_path / "planted.txt"
    lines = []
    for part in range(2):  # x60..x64 are missing: those questions are skipped
        lines += [f": part{part}"] + [
            f"x{i} y{i} x{j} y{j}" for i, j in rng.integers(0, n + 5, size=(150, 2))
        ]
    questions.write_text("\n".join(lines) + "\n")
    return WordVectors(words, matrix), questions, datapath("wordsim353.tsv")


def _pairs(path):
    from tinylm.vectors.evaluate import read_pairs

    return read_pairs(path)


def test_scores_match_gensim(tmp_path) -> None:
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    from tinylm.vectors.evaluate import reference_file

    assert reference_file("questions-words.txt") == Path(
        datapath("questions-words.txt")
    )  # found, not imported
    vectors, questions, wordsim = planted_analogies(tmp_path)
    kv = KeyedVectors(vectors.dim)
    kv.add_vectors(vectors.words, vectors.vectors)
    ours, theirs = word_pairs(vectors, wordsim), kv.evaluate_word_pairs(wordsim)
    assert ours.spearman == pytest.approx(theirs[1][0], abs=1e-6)
    assert 100 * (1 - ours.used / ours.total) == pytest.approx(theirs[2])
    result = analogies(vectors, questions)
    accuracy, sections = kv.evaluate_word_analogies(str(questions))
    assert 0.1 < result.accuracy < 0.9 and result.accuracy == pytest.approx(accuracy)
    total = next(s for s in sections if s["section"] == "Total accuracy")
    assert result.used == len(total["correct"]) + len(total["incorrect"])


@pytest.fixture
def topic_file(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text("\n".join(" ".join(s) for s in topic_corpus()) + "\n")
    return path


def test_cli_verbs(topic_file, tmp_path, capsys) -> None:
    out = tmp_path / "vec"
    argv = ["--data", str(topic_file), "--out", str(out), "--dim", "16", "--window", "3", "--min-count", "1"]
    assert main(["vectors", "train", *argv, "--epochs", "3", "--sample", "0", "--threads", "1"]) == 0
    assert main(["vectors", "neighbours", str(out), "cow", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert len(lines) == 3 and all(line.split()[1] in TOPICS["farm"].split() for line in lines)
    assert main(["vectors", "analogy", str(out), "cow", "sheep", "ship", "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    pairs, questions = tmp_path / "p.tsv", tmp_path / "q.txt"
    pairs.write_text("cow\tsheep\t9\ncow\tship\t1\nsail\tship\t8\n")
    questions.write_text(": t\ncow sheep ship sail\n")
    assert main(["vectors", "eval", str(out), "--pairs", str(pairs), "--questions", str(questions)]) == 0
    assert "on 3/3 pairs" in capsys.readouterr().out


def test_cli_on_a_models_embeddings(tiny_checkpoint, capsys) -> None:
    assert main(["vectors", "neighbours", str(tiny_checkpoint), "the", "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["neighbours", "{vec}", "kinq"], "'kinq' is not among the 5 words of"),
        (["train", "--data", "{empty}", "--out", "{tmp}/o"], "empty corpus"),
        (
            ["train", "--data", "{corpus}", "--out", "{tmp}/o", "--dim", "0"],
            "dim must be a positive integer, got 0",
        ),
        (["eval", "{tmp}"], "neither a vectors directory"),
    ],
)
def test_cli_bad_input_exits_2(argv, message, topic_file, tmp_path, capsys) -> None:
    vec = tmp_path / "vec"
    hand_made().save(vec)
    (tmp_path / "empty.txt").write_text("\n \n")
    subs = {"vec": vec, "empty": tmp_path / "empty.txt", "corpus": topic_file, "tmp": tmp_path}
    assert main(["vectors", *(a.format(**subs) for a in argv)]) == 2
    assert message in capsys.readouterr().err


def test_threads_option_is_undone_after_training(topic_file, tmp_path) -> None:
    before = torch.get_num_threads()
    argv = ["--data", str(topic_file), "--out", str(tmp_path / "v"), "--min-count", "1", "--epochs", "1"]
    assert main(["vectors", "train", *argv, "--threads", str(before + 1)]) == 0
    assert torch.get_num_threads() == before
