"""N-gram models: every distribution sums to one, modified Kneser-Ney's discounts and continuation counts
are KenLM's, exported ARPA files score in kenlm as in tinylm, the estimators rank as the literature says
on real text, and the verbs work end to end on corpora and token shards."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.data import CORPORA
from tinylm.data.readers import read_text
from tinylm.data.shards import TokenShards
from tinylm.errors import TinyLMError
from tinylm.ngram import NGramLM, train_ngram
from tinylm.ngram.arpa import ngram_tokens, read_arpa, write_arpa
from tinylm.ngram.counts import count_ngrams, sentence_stream
from tinylm.ngram.smoothing import METHODS, adjusted_counts, kenlm_discounts


def word_lines(chars: int, skip: int = 0) -> list[list[str]]:
    """Lines of Shakespeare as words and punctuation, from a slice of the embedded plays."""
    text = read_text(CORPORA["shakespeare"].path)[skip : skip + chars]
    return [re.findall(r"\w+|[^\w\s]", line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lines() -> tuple[list[list[str]], list[list[str]]]:
    """(training lines, the 200 lines after them) of Shakespeare."""
    all_lines = word_lines(250_000, skip=100_000)
    return all_lines[:-200], all_lines[-200:]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_every_seen_context_sums_to_one(method, order, lines) -> None:
    lm = train_ngram(lines[0][:300], order=order, method=method, min_count=2)
    rng = np.random.default_rng(0)
    contexts = [[]]
    for k in range(1, order):
        rows = ngram_tokens(lm, k)
        contexts += [[lm.vocab[t] for t in row] for row in rows[rng.permutation(len(rows))[:40]]]
    for context in contexts:
        total = np.exp(lm.distribution(context)).sum()  # every id, </s> and <unk> included; <s> is 0
        assert abs(total - 1) < 1e-9, (context, total)


def test_discounts_are_kenlms_formula() -> None:
    # n1..n4 = 100, 40, 20, 10: Y = 5/9, D1 = 1 - 2Y(40/100), D2 = 2 - 3Y(20/40), D3+ = 3 - 4Y(10/20)
    assert kenlm_discounts([100, 40, 20, 10]) == pytest.approx([5 / 9, 7 / 6, 17 / 9], abs=1e-12)
    assert kenlm_discounts([10, 0, 3, 1]) is None  # no n2: lmplz cannot estimate; we fall back as it can


def test_lower_orders_use_continuation_counts() -> None:
    counts = count_ngrams(sentence_stream([np.array(s) for s in ([3, 4], [5, 4], [3, 4])]), 6, 2)
    raw, adjusted = counts.counts[0], adjusted_counts(counts, 1, "mkn")
    assert raw[4] == 3 and adjusted[4] == 2  # "b" follows two distinct tokens
    assert adjusted[3] == 1 and adjusted[2] == 1  # "a" only after <s>; </s> only after "b"
    assert (adjusted_counts(counts, 2, "mkn") == counts.counts[1]).all()  # the top order keeps raw counts
    assert (adjusted_counts(counts, 1, "wb") == raw).all()


def test_kenlm_scores_our_arpa_like_we_do(lines, tmp_path) -> None:
    kenlm = pytest.importorskip("kenlm")
    train, held_out = lines
    lm = train_ngram(train, order=4, method="mkn")
    path = write_arpa(lm, tmp_path / "lm.arpa")
    model, back = kenlm.Model(str(path)), read_arpa(path)
    for sentence in held_out:
        ours = lm.score(sentence) / math.log(10)
        assert abs(ours - model.score(" ".join(sentence), bos=True, eos=True)) < 1e-4
        assert abs(ours - back.score(sentence) / math.log(10)) < 1e-5


def test_heldout_perplexity_ranks_the_estimators(lines) -> None:
    train, held_out = lines
    perplexity = {}
    for method in METHODS:
        lm = train_ngram(train, order=3, method=method)
        tokens = sum(len(s) + 1 for s in held_out)
        perplexity[method] = math.exp(-sum(lm.score(s) for s in held_out) / tokens)
    assert perplexity["mkn"] <= perplexity["kn"] <= perplexity["wb"] < perplexity["addk"], perplexity


def test_logprob_distribution_and_score_agree(lines) -> None:
    train, held_out = lines
    lm = train_ngram(train, order=4, method="mkn")
    for sentence in held_out[:30]:
        context, total = ["<s>"], 0.0
        for token in [*sentence, "</s>"]:
            p = lm.logprob(token, context)
            assert p == pytest.approx(lm.distribution(context)[lm.index.get(token, 0)], abs=1e-12)
            total += p
            context.append(token)
        assert lm.score(sentence) == pytest.approx(total, abs=1e-9)
    assert lm.logprob("the", ["a", "b", "<s>"]) == lm.logprob("the", ["<s>"])  # nothing reaches past <s>
    assert lm.logprob("zzzz-never-seen", ["<s>"]) == lm.logprob("<unk>", ["<s>"]) < 0


def test_save_load_round_trip(lines, tmp_path) -> None:
    lm = train_ngram(lines[0][:500], order=3, method="wb")
    lm.save(tmp_path / "m")
    back = NGramLM.load(tmp_path / "m")
    assert back.order == 3 and back.vocab == lm.vocab and back.method == "wb"
    assert all(back.score(s) == lm.score(s) for s in lines[1][:20])


def test_characters_with_spaces_survive_arpa(tmp_path) -> None:
    lm = train_ngram([list("to be or not to be"), list("that is\tthe question")], order=3)
    back = read_arpa(write_arpa(lm, tmp_path / "c.arpa"))
    assert back.score(list("to be, or")) == pytest.approx(lm.score(list("to be, or")), abs=1e-6)


@pytest.mark.parametrize("order", [0, 9])
def test_bad_order(order) -> None:
    with pytest.raises(TinyLMError, match=f"order must be an integer from 1 to 5, got {order}"):
        train_ngram([["a"]], order=order)


def test_empty_corpus_and_bad_method() -> None:
    with pytest.raises(TinyLMError, match="empty corpus"):
        train_ngram([[], []])
    with pytest.raises(TinyLMError, match="method must be one of mkn, kn, wb, addk, got 'good-turing'"):
        train_ngram([["a"]], method="good-turing")


ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-99\t<s>\t-0.3
-0.5\t</s>
-1.0\t<unk>
-0.4\ta{bow}

\\2-grams:
-0.2\t<s> a
-0.1\ta </s>

\\end\\
"""


def test_arpa_errors_name_file_and_line(tmp_path) -> None:
    good = tmp_path / "good.arpa"
    good.write_text(ARPA.format(bow="\t-0.2"))
    assert read_arpa(good).logprob("</s>", ["a"]) == pytest.approx(-0.1 * math.log(10))
    missing = tmp_path / "missing.arpa"
    missing.write_text(ARPA.format(bow=""))
    with pytest.raises(
        TinyLMError, match=rf"{missing}:9: 'a' has no backoff weight, but it is the context of 'a </s>'"
    ):
        read_arpa(missing)
    counts = tmp_path / "counts.arpa"
    counts.write_text(ARPA.format(bow="\t-0.2").replace("ngram 2=2", "ngram 2=3"))
    with pytest.raises(
        TinyLMError, match=rf"{counts}:3: the header says ngram 2=3 but the \\2-grams: section holds 2"
    ):
        read_arpa(counts)
    context = tmp_path / "context.arpa"
    context.write_text(
        ARPA.format(bow="\t-0.2")
        .replace("ngram 2=2", "ngram 2=3")
        .replace("-0.1\ta </s>", "-0.1\ta </s>\n-0.1\tb a")
    )
    with pytest.raises(TinyLMError, match=rf"{context}:14: a token of 'b a' is not among the 1-grams"):
        read_arpa(context)


def test_cli_train_eval_generate_export(tiny_corpus_dir, tmp_path, capsys) -> None:
    plays, model = str(tiny_corpus_dir / "plays.txt"), str(tmp_path / "char")
    assert main(["ngram", "train", "--data", plays, "--out", model, "--order", "4"]) == 0
    trained = capsys.readouterr().out
    assert "bits per byte" in trained and (Path(model) / "arrays.npz").is_file()
    assert main(["ngram", "eval", "--model", model, "--data", plays]) == 0
    evaluated = capsys.readouterr().out
    assert re.search(r"val: [\d.]+ bits per byte", evaluated).group() in trained
    assert "6,000 bytes" in evaluated  # the last 10% of 60,000 characters, as data prepare splits it
    generate = ["ngram", "generate", "--model", model, "--max-tokens", "80", "--seed", "3"]
    assert main(generate) == 0
    first = capsys.readouterr().out
    assert main(generate) == 0 and capsys.readouterr().out == first and first.strip()
    arpa = tmp_path / "char.arpa"
    assert main(["ngram", "export", "--model", model, "--out", str(arpa)]) == 0
    assert main(["ngram", "eval", "--model", str(arpa), "--unit", "char", "--data", plays]) == 0
    assert re.search(r"val: [\d.]+ bits per byte", capsys.readouterr().out).group() in trained


def test_cli_on_shards_matches_the_neural_split(tiny_shards_dir, tmp_path, capsys) -> None:
    val = TokenShards.open(tiny_shards_dir).manifest["splits"]["val"]
    for unit in ("token", "char"):
        out = str(tmp_path / unit)
        assert main(["ngram", "train", "--shards", str(tiny_shards_dir), "--unit", unit, "--out", out]) == 0
        scores = NGramLM.load(out).config["val"]
        assert scores["bytes"] == val["bytes"]
        if unit == "token":  # every val token is predicted, each EOS as </s>
            assert scores["tokens"] == val["tokens"]
        assert main(["ngram", "eval", "--model", out, "--shards", str(tiny_shards_dir)]) == 0
        assert f"{scores['bpb']:.4f} bits per byte" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--order", "0"], "order must be an integer from 1 to 5, got 0"),
        (["--order", "9"], "order must be an integer from 1 to 5, got 9"),
        (["--unit", "token"], "unit 'token' needs a tokenizer"),
        (["--data", "__nothing__"], "__nothing__: no such file or directory"),
    ],
)
def test_cli_bad_input_exits_2(argv, message, tiny_corpus_dir, tmp_path, capsys) -> None:
    data = [] if "--data" in argv else ["--data", str(tiny_corpus_dir / "plays.txt")]
    assert main(["ngram", "train", *data, "--out", str(tmp_path / "m"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cli_empty_corpus_exits_2(tmp_path, capsys) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    assert main(["ngram", "train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "m")]) == 2
    assert "empty corpus" in capsys.readouterr().err


def test_cached_answers_equal_fresh_ones(lines) -> None:
    train, held_out = lines
    words = [w for s in held_out for w in s]
    queries = list(zip(words, words[1:], words[2:], strict=False))
    lm = train_ngram(train, order=3)
    first = [lm.logprob(c, [a, b]) for a, b, c in queries]
    assert [lm.logprob(c, [a, b]) for a, b, c in queries] == first  # answered from the cache
    fresh = train_ngram(train, order=3)
    assert [fresh.logprob(c, ["x", a, b]) for a, b, c in queries] == first  # only the last order-1 count
