"""`tinylm data clean`: MinHash and LSH against theory and datasketch, the quality rules against datatrove,
normalisation, PII, language filtering, and the command's outputs, errors and parallelism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.data import read_documents
from tinylm.data.clean.lsh import band_keys, candidate_probability, optimal_bands
from tinylm.data.clean.minhash import MinHasher, jaccard_estimate
from tinylm.data.clean.normalize import dedup_key, normalize_text
from tinylm.data.clean.pii import scrub
from tinylm.data.clean.rules import C4Rules, GopherRules, c4, gopher
from tinylm.data.clean.run import clean_corpus
from tinylm.data.clean.words import sentence_spans, split_words
from tinylm.errors import TinyLMError


def _pair(rng, shared: int, only: int) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of random 32-bit values sharing `shared` elements, with `only` of their own each."""
    values = rng.choice(1 << 32, size=shared + 2 * only, replace=False).astype(np.uint64)
    common, a, b = values[:shared], values[shared : shared + only], values[shared + only :]
    return np.concatenate([common, a]), np.concatenate([common, b])


def test_minhash_estimates_jaccard_within_three_sigma():
    rng, hasher = np.random.default_rng(0), MinHasher(128, seed=3)
    inside = 0
    for _ in range(1000):
        shared, only = int(rng.integers(5, 150)), int(rng.integers(1, 60))
        a, b = _pair(rng, shared, only)
        j = shared / (shared + 2 * only)
        sigma = math.sqrt(j * (1 - j) / 128)
        inside += abs(jaccard_estimate(hasher.signature(a), hasher.signature(b)) - j) <= 3 * sigma
    assert inside >= 990


@pytest.mark.parametrize(
    "similarity, shared, only", [(0.5, 40, 20), (0.7, 56, 12), (0.8, 64, 8), (0.9, 72, 4)]
)
def test_lsh_candidate_rate_follows_the_s_curve(similarity, shared, only):
    bands, rows = optimal_bands(0.8, 128)
    rng, hasher = np.random.default_rng(int(similarity * 100)), MinHasher(128, seed=5)
    hits, pairs = 0, 1500
    for _ in range(pairs):
        a, b = (band_keys(hasher.signature(s), bands, rows) for s in _pair(rng, shared, only))
        hits += any(x == y for x, y in zip(a, b, strict=True))
    assert abs(hits / pairs - candidate_probability(similarity, bands, rows)) <= 0.03


def test_bands_and_rows_match_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold in (0.5, 0.8, 0.9):
        assert optimal_bands(threshold, 64) == _optimal_param(threshold, 64, 0.5, 0.5)
    assert optimal_bands(0.8, 128) == _optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)


def test_minhash_estimates_as_well_as_datasketch():
    from datasketch import MinHash

    rng, ours = np.random.default_rng(1), MinHasher(128, seed=1)
    errors_ours, errors_theirs = [], []
    for _ in range(200):
        shared, only = int(rng.integers(20, 100)), int(rng.integers(1, 40))
        a, b = _pair(rng, shared, only)
        j = shared / (shared + 2 * only)
        errors_ours.append(jaccard_estimate(ours.signature(a), ours.signature(b)) - j)
        theirs = [MinHash(128, seed=1) for _ in range(2)]
        for m, s in zip(theirs, (a, b), strict=True):
            m.update_batch([int(v).to_bytes(4, "little") for v in s])
        errors_theirs.append(theirs[0].jaccard(theirs[1]) - j)
    rmse = [math.sqrt(np.mean(np.square(e))) for e in (errors_ours, errors_theirs)]
    assert abs(np.mean(errors_ours)) < 0.01 and rmse[0] < 1.2 * rmse[1]


def test_bad_threshold_is_an_error():
    for t in (0, 1, 1.5, -0.2):
        with pytest.raises(TinyLMError, match="threshold must be strictly between 0 and 1"):
            optimal_bands(t, 128)


GOOD = "\n".join(
    f"The {animal} sat on the mat and looked at the birds of the garden with great interest. "
    f"It had been waiting there since the morning, and it would wait a little longer."
    for animal in ("cat", "dog", "fox", "owl", "hen", "cow")
)
GOPHER_FIXTURE = {
    "kept": GOOD,
    "gopher_short_doc": "The cat and the dog sat on the mat.",
    "gopher_long_doc": "the cat and " * 33_400,
    "gopher_below_avg_threshold": "The cat and the dog sat on a mat to be at the end of it. " * 5,
    "gopher_above_avg_threshold": "the and extraordinarily incomprehensibilities characteristically " * 20,
    "gopher_too_many_hashes": GOOD + "\n" + "# " * 30,
    "gopher_too_many_ellipsis": GOOD.replace(" the ", " the ... "),
    "gopher_too_many_bullets": "\n".join("- " + line for line in GOOD.splitlines()),
    "gopher_too_many_end_ellipsis": "\n".join(
        line + ("..." if i % 2 else "") for i, line in enumerate(GOOD.splitlines())
    ),
    "gopher_below_alpha_threshold": GOOD + "\n" + " ".join(str(i) for i in range(60)),
    "gopher_enough_stop_words": " ".join(["Cats sit on warm mats in gardens"] * 10),
}
C4_FIXTURE = {
    "kept": GOOD,
    "kept-with-dropped-lines": GOOD
    + "\nPlease enable JavaScript to see this page.\nRead our privacy policy before you go.\n"
    "No ending mark here\nToo short.\nSee the note [12] about the cat and the owl.",
    "lorem_ipsum": GOOD + "\nLorem ipsum dolor sit amet, consectetur.",
    "curly_bracket": GOOD + "\nThe code reads {x} and stops here.",
    "too_few_sentences": "Only one sentence stands here. And a second one.",
}


@pytest.fixture
def datatrove_words(monkeypatch):
    """datatrove's filters, splitting words and sentences as our rules do (NLTK is not installed)."""
    from datatrove.utils import text, word_tokenizers

    class Splitter:
        def word_tokenize(self, t):
            return split_words(t)

        def span_tokenize(self, t):
            return sentence_spans(t)

    monkeypatch.setattr(word_tokenizers, "load_word_tokenizer", lambda language: Splitter())
    text.split_into_parts.cache_clear()
    yield
    text.split_into_parts.cache_clear()


def _datatrove_verdict(filter_, text):
    from datatrove.data import Document

    doc = Document(text=text, id="x")
    result = filter_.filter(doc)
    return (None if result is True else result[1]), doc.text


def test_gopher_rules_agree_with_datatrove(datatrove_words):
    from datatrove.pipeline.filters import GopherQualityFilter

    theirs = GopherQualityFilter()
    for expected, text in GOPHER_FIXTURE.items():
        reason = None if expected == "kept" else expected
        assert gopher(text, GopherRules()) == reason, expected
        assert _datatrove_verdict(theirs, text)[0] == reason, expected


def test_c4_rules_agree_with_datatrove(datatrove_words):
    from datatrove.pipeline.filters import C4QualityFilter

    theirs = C4QualityFilter()
    for expected, text in C4_FIXTURE.items():
        reason = None if expected.startswith("kept") else expected
        verdict = c4(text, C4Rules())
        assert verdict.reason == reason, expected
        assert _datatrove_verdict(theirs, text) == (reason, verdict.text if reason is None else text), (
            expected
        )
    lines = c4(C4_FIXTURE["kept-with-dropped-lines"], C4Rules()).lines
    assert lines == {"javascript": 1, "policy": 1, "no_terminal_punc": 1, "too_few_words": 1}


def test_unsegmented_text_counts_characters_and_skips_word_length_rules():
    poem = "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    assert gopher(poem, GopherRules()) == "gopher_short_doc"  # 22 characters < 50
    assert gopher(poem, GopherRules(min_doc_words=10)) is None  # no avg-length or stop-word rule
    assert c4(poem, C4Rules()).reason == "too_few_sentences"
    verdict = c4(poem, C4Rules(min_num_sentences=-1))
    assert verdict.reason is None and verdict.text == "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"


def test_normalisation_and_exact_dedup_key():
    assert normalize_text("  a\u3000 b\t\tc  \r\n\n\n\nd\u200b  ") == "a b c  \n\nd".replace("  \n", "\n")
    assert dedup_key("Ｈｅｌｌｏ,  world\n") == dedup_key("hello, world") != dedup_key("hello world!")
    assert normalize_text("ｆｕｌｌ，", "NFKC") == "full," and normalize_text("ｆｕｌｌ，") == "ｆｕｌｌ，"


def test_pii_is_replaced_and_counted():
    text, counts = scrub(
        "Write to jane.doe@example.org or call +1 415-555-2671 / (555) 123-4567; 手机13812345678，"
        "身份证11010519491231002X, SSN 123-45-6789, card 4111 1111 1111 1111. In 1999, Genesis 1:1, 978-3-16."
    )
    assert text == (
        "Write to <EMAIL> or call <PHONE> / <PHONE>; 手机<PHONE>，身份证<ID>, SSN <ID>, card <ID>. "
        "In 1999, Genesis 1:1, 978-3-16."
    )
    assert counts == {"<EMAIL>": 1, "<PHONE>": 3, "<ID>": 3}
    assert scrub("card 4111 1111 1111 1112")[1] == {}  # fails the Luhn check


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _words(rng, n):
    vocab = [f"w{i}" for i in range(400)]
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


@pytest.fixture
def dup_corpus(tmp_path, jsonl):
    """20 distinct documents, then 3 near copies of each (1 of 300 words changed) and 2 exact copies with
    other width, case and spacing, shuffled."""
    rng = np.random.default_rng(0)
    bases = [_words(rng, 300) for _ in range(20)]
    copies = []
    for i, words in enumerate(bases):
        for _ in range(3):
            changed = list(words)
            for j in rng.choice(300, 1, replace=False):
                changed[j] = "zz" + changed[j]
            copies.append((i, " ".join(changed)))
        copies.append((i, "  ".join(words).upper()))
        copies.append((i, " ".join(words).replace("w1", "ｗ1") + "\n"))
    order = rng.permutation(len(copies))
    rows = [{"text": " ".join(w), "id": i} for i, w in enumerate(bases)]
    rows += [{"text": copies[k][1], "id": copies[k][0]} for k in order]
    return jsonl(tmp_path / "dups.jsonl", rows)


def test_one_survivor_per_cluster_and_no_cross_cluster_merges(dup_corpus, tmp_path):
    report = clean_corpus(str(dup_corpus), str(tmp_path / "out"), quality=[], pii=False)
    out = tmp_path / "out"
    kept, dropped = _rows(out / "kept.jsonl"), _rows(out / "dropped.jsonl")
    assert [r["id"] for r in kept] == list(range(20))
    assert [r["source"] for r in kept] == [f"{dup_corpus}:{i + 1}" for i in range(20)]
    ids = {f"{dup_corpus}:{n}": row["id"] for n, row in enumerate(_rows(dup_corpus), 1)}
    assert all(ids[d["duplicate_of"]] == ids[d["source"]] for d in dropped)
    assert report["stages"]["exact_duplicate"] == 40 and report["stages"]["near_duplicate"] == 60
    assert sorted(c["size"] for c in report["clusters"]["near"]) == [4] * 10
    assert list(read_documents(str(out / "kept.jsonl"))) == [r["text"] for r in kept]


def test_filters_languages_and_report(tmp_path, jsonl):
    english = GOOD + " Write to jane.doe@example.org."
    french = "Le chat est assis sur le tapis et regarde les oiseaux du jardin avec un grand intérêt. " * 6
    chinese = (
        "秦川雄帝宅，函谷壮皇居。绮殿千寻起，离宫百雉余。连甍遥接汉，飞观迥凌虚。云日隐层阙，风烟出绮疎。"
    )
    short = "The cat and the dog sat on the mat, said the old man."
    src = jsonl(tmp_path / "mixed.jsonl", [{"text": t} for t in (english, french, chinese, "   ", short)])
    report = clean_corpus(
        str(src),
        str(tmp_path / "out"),
        languages=["en", "zh"],
        c4=C4Rules(min_num_sentences=-1),
        gopher=GopherRules(min_doc_words=30),
    )
    kept = _rows(tmp_path / "out" / "kept.jsonl")
    assert [r["language"] for r in kept] == ["en", "zh"] and "<EMAIL>" in kept[0]["text"]
    assert report["stages"] == {
        "empty": 1,
        "language": 1,
        "quality": 1,
        "exact_duplicate": 0,
        "near_duplicate": 0,
    }
    assert report["rules"] == {"empty": 1, "language_fr": 1, "gopher_short_doc": 1}
    assert report["pii_replaced"] == {"<EMAIL>": 1}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| gopher_short_doc | 1 |" in md and "| language_fr | 1 |" in md


def test_unreadable_file_is_reported_and_skipped(tmp_path, jsonl):
    jsonl(tmp_path / "corpus" / "good.jsonl", [{"text": GOOD}])
    (tmp_path / "corpus" / "broken.jsonl.gz").write_bytes(b"this is not gzip at all")
    report = clean_corpus(str(tmp_path / "corpus"), str(tmp_path / "out"))
    assert [u["file"] for u in report["unreadable_files"]] == [str(tmp_path / "corpus" / "broken.jsonl.gz")]
    assert report["documents"]["kept"] == 1
    assert "broken.jsonl.gz" in (tmp_path / "out" / "report.md").read_text()


def test_two_processes_write_the_same_output(dup_corpus, tiny_corpus_dir, tmp_path):
    outs = [tmp_path / f"p{n}" for n in (1, 2)]
    for n, out in zip((1, 2), outs, strict=True):
        clean_corpus(str(tiny_corpus_dir), str(out), processes=n, gopher=GopherRules(min_doc_words=10))
    for name in ("kept.jsonl", "dropped.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    reports = [json.loads((o / "report.json").read_text()) for o in outs]
    for r in reports:
        del r["seconds"], r["mb_per_second"], r["processes"]
    assert reports[0] == reports[1] and reports[0]["documents"]["read"] == 401


def test_cli_smoke_bad_threshold_and_pipeline_wiring(dup_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "clean", "--data", str(dup_corpus), "--out", str(out), "--threshold", "1.5"]) == 2
    assert "threshold must be strictly between 0 and 1, got 1.5" in capsys.readouterr().err
    assert not out.exists()
    argv = [
        "data",
        "clean",
        "--data",
        str(dup_corpus),
        "--out",
        str(out),
        "--quality",
        "[]",
        "--processes",
        "2",
    ]
    assert main(argv) == 0 and "clean: kept 20 of 120 documents" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "dropped.jsonl",
        "kept.jsonl",
        "report.json",
        "report.md",
    ]
    assert main(argv) == 0 and "already holds this cleaning" in capsys.readouterr().out

    from tinylm.data.clean.report import summarize
    from tinylm.pipeline.wiring import stage_options

    assert "kept 20 of 120 documents" in summarize(out)
    recipe = {"data": str(dup_corpus), "stages": ["clean", "tokenizer"], "clean": {}, "tokenizer": {}}
    options = stage_options(recipe, tmp_path / "run")
    assert options["clean"]["data"] == str(dup_corpus)
    assert options["tokenizer"]["data"] == str(tmp_path / "run" / "clean" / "kept.jsonl")
