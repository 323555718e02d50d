"""N-gram counting from one sort of packed windows equals counting every n-gram one by one (also when a
window needs several int64 words), characters coded by code points train the model their lists of
characters train, held-out ids match `NGramLM.ids`, and KenLM reads an order-1 model's ARPA file."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from tinylm.ngram import NGramLM, train_ngram
from tinylm.ngram import counts as counts_module
from tinylm.ngram.arpa import read_arpa, write_arpa
from tinylm.ngram.counts import BOS, count_ngrams, sentence_stream
from tinylm.ngram.vocab import encode


def naive_counts(sentences: list[np.ndarray], order: int) -> list[Counter]:
    """Per order, every n-gram inside `<s> sentence </s>` that ends on a token other than `<s>`."""
    found = [Counter() for _ in range(order)]
    for s in sentences:
        tokens = [BOS, *s.tolist(), 2]
        for k in range(1, order + 1):
            found[k - 1].update(tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1))
    del found[0][(BOS,)]
    return found


def tables(counts, k: int) -> list[tuple[int, ...]]:
    """The tokens of every k-gram of the counts (k >= 2), in table order."""
    V = counts.vocab_size
    if k == 2:
        return [(key // V, key % V) for key in counts.keys[1].tolist()]
    above = tables(counts, k - 1)
    return [(*above[key // V], key % V) for key in counts.keys[k - 1].tolist()]


@pytest.mark.parametrize("vocab_size", [6, 300, 3_000_000])  # 3M: 22 bits a token, 3 words a 5-gram window
def test_counts_equal_counting_each_ngram(vocab_size, monkeypatch) -> None:
    monkeypatch.setattr(counts_module, "_CHUNK", 16)  # neighbours compared over several chunks
    rng = np.random.default_rng(vocab_size)
    sentences = [rng.integers(3, min(vocab_size, 9), size=int(rng.integers(0, 9))) for _ in range(60)]
    sentences += [rng.integers(3, vocab_size, size=4) for _ in range(5)]
    order = 5
    counts = count_ngrams(sentence_stream(sentences), vocab_size, order)
    expected = naive_counts(sentences, order)
    seen = np.flatnonzero(counts.counts[0])
    assert (
        dict(zip([(t,) for t in seen.tolist()], counts.counts[0][seen].tolist(), strict=True)) == expected[0]
    )
    for k in range(2, order + 1):
        grams = tables(counts, k)
        assert dict(zip(grams, counts.counts[k - 1].tolist(), strict=True)) == expected[k - 1]
        assert grams == sorted(grams)  # lexicographic table order: what lookups search
        below = (
            {g: i for i, g in enumerate(tables(counts, k - 1))} if k > 2 else {(t,): t for t in seen.tolist()}
        )
        assert counts.suffix[k - 1].tolist() == [below[g[1:]] for g in grams]
        assert counts.starts_bos[k - 1].tolist() == [g[0] == BOS for g in grams]


def test_characters_as_text_or_as_lists_train_one_model() -> None:
    text = ["to be, or not to be\nthat is the question: ünïcödé 诗 \udcff", "whether 'tis nobler"]
    as_text = train_ngram(text, order=4, min_count=2)
    as_lists = train_ngram([list(s) for s in text], order=4, min_count=2)
    mixed = train_ngram(iter([text[0], list(text[1])]), order=4, min_count=2)
    assert as_text.vocab == as_lists.vocab == mixed.vocab and "<unk>" in as_text.vocab
    for lm in (as_lists, mixed):
        for a, b in zip(
            as_text.keys + as_text.logp + as_text.logbow, lm.keys + lm.logp + lm.logbow, strict=True
        ):
            assert np.array_equal(a, b)
    held_out = ["to be ünknown", "", "诗"]
    assert [x.tolist() for x in encode(held_out, as_text.index)] == [as_text.ids(s) for s in held_out]
    words = [["to", "be"], [], ["or", "zzz"]]
    assert [x.tolist() for x in encode(words, as_text.index)] == [as_text.ids(s) for s in words]


def test_kenlm_reads_an_order_1_model(tmp_path) -> None:
    kenlm = pytest.importorskip("kenlm")
    lm = train_ngram([list("tobeornottobe"), list("thatisthequestion")], order=1)
    path = write_arpa(lm, tmp_path / "unigram.arpa")
    model, back = kenlm.Model(str(path)), read_arpa(path)
    for sentence in ["tobe", "questionzq", ""]:
        ours = lm.score(list(sentence)) / math.log(10)
        assert abs(ours - model.score(" ".join(sentence), bos=True, eos=True)) < 1e-4
        assert back.score(list(sentence)) == pytest.approx(lm.score(list(sentence)), abs=1e-6)
    assert isinstance(back, NGramLM)
