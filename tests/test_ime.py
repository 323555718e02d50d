"""The pinyin input method: typed pinyin is split into syllables every way it can be, the lattice holds
each span's characters and phrases, Viterbi finds the exact best path, and `tinylm ime` works on the command
line and interactively."""

from __future__ import annotations

import itertools
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinylm.cli import main
from tinylm.data import CORPORA
from tinylm.errors import TinyLMError
from tinylm.ime.cli import Composer
from tinylm.ime.decode import InputMethod, NeuralScorer, beam_search, rescore, sentence_score, viterbi
from tinylm.ime.lattice import Lattice, build_lattice
from tinylm.ime.model import clauses
from tinylm.ime.syllables import read_pinyin, syllables
from tinylm.infer.scoring import token_logprobs
from tinylm.ngram import NGramLM, train_ngram


@pytest.fixture(scope="module")
def poem_lm(tmp_path_factory) -> tuple[NGramLM, Path]:
    """A character trigram model of Tang-300 and the first 2,000 Tang poems (a few seconds), and where it is
    saved. Tang-300 holds 静夜思 as 床前明月光."""
    texts = []
    for name, limit in (("tang300", None), ("tang", 2000)):
        with lzma.open(CORPORA[name].path, "rt", encoding="utf-8") as f:  # the embedded copies
            texts += ["".join(json.loads(line)["paragraphs"]) for line in itertools.islice(f, limit)]
    lm = train_ngram(clauses(texts), order=3)
    out = tmp_path_factory.mktemp("ime") / "poems-3gram"
    lm.save(out)
    return lm, out


def test_syllables_come_from_pypinyin() -> None:
    found = syllables()
    assert {"chuang", "zhuang", "a", "er", "lv", "nve", "xian", "xi", "an"} <= found
    assert not {"m", "ng", "hm", "xq"} & found


@pytest.mark.parametrize(
    "typed",
    [
        "chuang qian ming yue guang",
        "chuangqianmingyueguang",
        "chuang2 qian2 ming2 yue4 guang1",
        "chuang2qian2ming2yue4guang1",
        "chuáng qián míng yuè guāng",
        "ChuangQianMingYueGuang",
    ],
)
def test_the_same_line_however_typed(typed: str) -> None:
    assert read_pinyin(typed).best_split() == ["chuang", "qian", "ming", "yue", "guang"]


def test_ambiguous_letters_keep_every_split() -> None:
    assert read_pinyin("xian").splits() == [["xian"], ["xi", "an"]]
    assert read_pinyin("xi'an").splits() == [["xi", "an"]]  # an apostrophe fixes the boundary
    assert read_pinyin("xi1an1").splits() == [["xi", "an"]]  # so does a tone digit
    assert sorted(read_pinyin("fangan").splits()) == [["fan", "gan"], ["fang", "an"]]


def test_u_umlaut_spellings() -> None:
    for typed in ("lü", "lv", "lu:", "lǜ"):
        assert read_pinyin(typed).splits() == [["lv"]]
    assert read_pinyin("nüe").splits() == read_pinyin("nve").splits() == [["nve"], ["nv", "e"]]
    assert [read_pinyin("nue").syllable(0, 3)] == ["nve"]  # the common spelling without the umlaut


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("mingxq", 'cannot read "xq" at position 5 of "mingxq"'),
        ("mingxqguang", 'cannot read "xq" at position 5 of "mingxqguang"'),
        ("ni3 hao3 x", 'cannot read "x" at position 10 of "ni3 hao3 x"'),
        ("ni hao!", 'cannot read "!" at position 7 of "ni hao!"'),
        ("  ", '"  " holds no pinyin'),
    ],
)
def test_unreadable_parts_are_named(typed: str, message: str) -> None:
    with pytest.raises(TinyLMError, match=message):
        read_pinyin(typed)


def test_lattice_has_characters_and_phrases() -> None:
    lattice = build_lattice(read_pinyin("yibuxiaoxin"))
    assert "一" in {e.text for e in lattice.edges[0] if e.end == 2}
    assert "一不小心" in {e.text for e in lattice.edges[0] if e.end == 11}  # a phrase from pypinyin's list
    assert {e.end for e in lattice.edges[2]} >= {4}
    cut = build_lattice(read_pinyin("ming"), rank=lambda c: c == "明", per_syllable=1)
    assert [e.text for e in cut.edges[0]] == ["明"]


class LogprobOnly:
    """An n-gram model seen only through `order` and `logprob`, the least a decoder's scorer must offer."""

    def __init__(self, lm: NGramLM) -> None:
        self.order, self.logprob = lm.order, lm.logprob


def every_path(lattice: Lattice, node: int = 0) -> list[str]:
    """Every text a path from `node` to the end of the lattice spells."""
    if node == lattice.end:
        return [""]
    return [e.text + rest for e in lattice.edges.get(node, ()) for rest in every_path(lattice, e.end)]


SHORT = [
    "chuang qian",
    "ming yue guang",
    "xian",
    "fangan",
    "bai ri yi shan jin",
    "xi'an ren",
    "lvshui",
    "yueguang",
]


@pytest.mark.parametrize("typed", SHORT)
def test_viterbi_and_a_wide_beam_equal_brute_force(poem_lm, typed: str) -> None:
    lm, _ = poem_lm
    method = InputMethod(lm, per_syllable=4)
    lattice = method.lattice(typed)
    scores = {text: lm.score(list(text)) for text in every_path(lattice)}
    ranked = sorted(scores, key=scores.get, reverse=True)
    best = viterbi(lattice, lm)
    assert best.text == ranked[0] and best.score == pytest.approx(scores[ranked[0]])
    one_by_one = viterbi(lattice, LogprobOnly(lm))  # a scorer without whole distributions
    assert (one_by_one.text, one_by_one.score) == (best.text, pytest.approx(best.score))
    assert sentence_score(best.text, lm) == pytest.approx(scores[best.text])
    wide = beam_search(lattice, lm, beam=len(scores), top=5)
    assert [c.text for c in wide] == ranked[:5]
    assert [c.score for c in wide] == pytest.approx([scores[t] for t in ranked[:5]])


def test_a_famous_line_comes_first(poem_lm) -> None:
    lm, _ = poem_lm
    method = InputMethod(lm)
    for typed in ("chuang qian ming yue guang", "chuangqianmingyueguang", "chuang2qian2ming2yue4guang1"):
        found = method.candidates(typed, top=5)
        assert found[0].text == "床前明月光"
        assert len({c.text for c in found}) == 5  # distinct
        assert [c.total for c in found] == sorted((c.total for c in found), reverse=True)
    assert method.best("bai ri yi shan jin").text == "白日依山尽"


def test_neural_rescoring_adds_the_weighted_model_logprob(poem_lm, tiny_checkpoint, capsys) -> None:
    lm, saved = poem_lm
    neural = NeuralScorer(tiny_checkpoint)
    found = InputMethod(lm).candidates("ming yue", top=4)
    ids = [[neural.tokenizer.eos_id, *neural.tokenizer.encode(c.text)] for c in found]
    expected = [  # log P(text | EOS), token by token, straight from the model's logits
        sum(token_logprobs(neural.model(torch.tensor([row])), torch.tensor([row]))[0].tolist()) for row in ids
    ]
    mixed = rescore(found, neural, weight=2.0)
    by_text = dict(zip((c.text for c in found), expected, strict=True))
    for c in mixed:
        assert c.neural == pytest.approx(by_text[c.text], abs=1e-4)
        assert c.total == pytest.approx(c.score + 2.0 * c.neural)
    assert [c.total for c in mixed] == sorted((c.total for c in mixed), reverse=True)
    assert [c.text for c in rescore(found, neural, weight=0.0)] == [c.text for c in found]
    assert [c.text for c in rescore(found, neural, weight=1e6)] == sorted(
        by_text, key=by_text.get, reverse=True
    )
    assert (
        main(["ime", "ming yue", "--ngram", str(saved), "--neural", str(tiny_checkpoint), "--top", "2"]) == 0
    )
    assert "\tneural " in capsys.readouterr().out


def test_cli_lists_candidates_and_names_bad_input(poem_lm, capsys) -> None:
    _, saved = poem_lm
    assert main(["ime", "chuangqianmingyueguang", "--ngram", str(saved), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[:2] == ["1", "床前明月光"]
    assert main(["ime", "mingxq", "--ngram", str(saved)]) == 2
    assert 'cannot read "xq" at position 5 of "mingxq"' in capsys.readouterr().err
    assert main(["ime", "--ngram", str(saved)]) == 2
    assert "--interactive" in capsys.readouterr().err
    assert main(["ime", "ni hao", "--top", "0", "--ngram", str(saved)]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err
    words = saved.parent / "words"
    train_ngram([["床前", "明月光"]], order=2, config={"unit": "word"}).save(words)
    assert main(["ime", "ni hao", "--ngram", str(words)]) == 2
    assert "the IME needs characters" in capsys.readouterr().err


def test_composer_builds_text_from_picks(poem_lm, capsys) -> None:
    lm, _ = poem_lm
    method = InputMethod(lm)
    first, second = (c.text for c in method.candidates("chuang qian", top=2))
    lines = iter(["chuang qian", "2", "ming yue", "9", "1", "-", "-", "chuang qian", "1", "mingyue", "1", ""])
    Composer(method, top=3).run(lambda prompt: next(lines), sys.stdout)
    out = capsys.readouterr().out.splitlines()
    assert f"text: {second}" in out
    assert "error: no candidate 9; type 1 to 3" in out
    assert f"text: {second}明月" in out and "text: " in out  # two pieces taken back with "-"
    assert out[-1] == f"{first}明月"  # the text composed, printed at the end


def test_default_model_is_built_once_and_rebuilt_when_the_corpus_changes(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "poems.jsonl"
    corpus.write_text(
        json.dumps({"text": "床前明月光，疑是地上霜。"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    args = ["ime", "chuang qian", "--corpus", str(corpus), "--order", "2"]
    assert main(args) == 0
    assert "building the 2-gram" in capsys.readouterr().err
    assert main(args) == 0
    assert "building" not in capsys.readouterr().err
    corpus.write_text(json.dumps({"text": "窗前明月光。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "building" in captured.err and captured.out.split("\t")[1] == "窗前"
    assert len(list((tmp_path / "cache" / "ime").iterdir())) == 2


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_interactive_mode_in_a_terminal(poem_lm, tmp_path) -> None:
    _, saved = poem_lm
    session = f"tinylm-ime-{os.getpid()}"
    src = str(Path(__file__).parents[1] / "src")
    env = f"PYTHONPATH={src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    command = f"env {env} {sys.executable} -m tinylm.cli ime --interactive --ngram {saved}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True)

    def screen_shows(text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen shows:\n{shown}")

    def type_line(keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, keys, "Enter"], check=True)

    try:
        screen_shows("pinyin>")  # capture-pane drops trailing spaces
        type_line("chuangqianmingyueguang")
        screen_shows("1. 床前明月光")
        type_line("1")
        screen_shows("text: 床前明月光")
        type_line("yi shi di shang shuang")
        screen_shows("1. 疑是地上霜")
        type_line("1")
        screen_shows("text: 床前明月光疑是地上霜")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
