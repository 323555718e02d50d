"""Task data: every row is what its prompt asks for, splits are deterministic and never overlap, and the
`tinylm data make` command writes the files or fails with one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tinylm.cli import main
from tinylm.tasks import is_test
from tinylm.tasks.arithmetic import arithmetic_reward
from tinylm.tasks.make import make_splits
from tinylm.tasks.poems import quatrains, select_form
from tinylm.tasks.poetry import is_exact_form, poem_reward

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")


def prompts(rows: list[dict]) -> set[str]:
    """The first user turn of each row, whatever its shape."""
    return {
        r["prompt"] if isinstance(r.get("prompt"), str) else r.get("messages", r.get("prompt"))[0]["content"]
        for r in rows
    }


def test_poems_ask_for_the_form_and_title_they_answer() -> None:
    splits = make_splits("poems", "tang300")
    rows = splits["train"] + splits["test"]
    # All 29 五言绝句 and 50 of the 51 七言绝句 (one is garbled by a note), and 16 poems filed as 乐府 or
    # 古诗 whose text has a quatrain's exact form.
    assert len(rows) == 95 and sum(r["title"] in ("静夜思", "登鹳雀楼", "枫桥夜泊") for r in rows) == 3
    for r in rows:
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert question == f"写一首{r['form']}，题为《{r['title']}》。" and is_exact_form(answer, r["form"])
    assert {r["title"] for r in splits["train"]}.isdisjoint(r["title"] for r in splits["test"])


def test_poems_sharing_a_title_or_text_stay_on_one_side(tmp_path, jsonl) -> None:
    a, b = (
        "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
        "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
    )
    rows = [
        {"title": "夜思", "paragraphs": a.split("\n")},
        {"title": "静夜思", "paragraphs": a.split("\n")},
        {"title": "静夜思", "paragraphs": b.split("\n")},
        {"title": "登楼", "paragraphs": ["白日依山尽", "黄河入海流"]},  # not a quatrain: skipped
    ]
    poems = quatrains(str(jsonl(tmp_path / "p.jsonl", rows)))
    assert [p.key for p in poems] == ["夜思", "夜思", "夜思"]


@pytest.mark.parametrize("task", ["poems", "preferences", "kjv", "arithmetic"])
def test_splits_are_disjoint_deterministic_and_seed_independent(task) -> None:
    source = {"poems": "tang300", "preferences": "tang300", "kjv": None, "arithmetic": None}[task]
    first = make_splits(task, source, seed=0)
    assert first == make_splits(task, source, seed=0)
    assert prompts(first["train"]).isdisjoint(prompts(first["test"]))
    assert 0.03 < len(first["test"]) / (len(first["train"]) + len(first["test"])) < 0.2
    if task != "arithmetic":  # a new seed redraws variants and order, never the split
        other = make_splits(task, source, seed=1)
        key = "title" if task in ("poems", "preferences") else "ref"
        assert {r[key] for r in other["test"]} == {r[key] for r in first["test"]}
    limited = make_splits(task, source, seed=0, limit=3)
    assert [len(v) for v in limited.values()] == [3, 3] and limited["train"] == first["train"][:3]


def test_preferences_are_real_poems_against_worse_ones() -> None:
    splits = make_splits("preferences", "tang300", seed=0)
    poems = make_splits("poems", "tang300", seed=0)
    assert {r["title"] for r in splits["test"]} == {r["title"] for r in poems["test"]}
    rows = splits["train"] + splits["test"]
    assert {r["corruption"] for r in rows} == {"rhyme", "longer", "shorter", "punctuation"}
    for r in rows:
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert is_exact_form(chosen, r["form"]) and chosen != rejected
        assert poem_reward(rejected, r["form"]) < poem_reward(chosen, r["form"])


def test_kjv_rows_rebuild_the_verse() -> None:
    rows = make_splits("kjv", limit=200)["train"]
    kinds = {r["messages"][0]["content"].split()[0] for r in rows}
    assert kinds == {"Quote", "Continue"}
    splits = make_splits("kjv")
    gen1_3 = [r for r in splits["train"] + splits["test"] if r["ref"] == "Genesis 1:3"]
    question, answer = (m["content"] for m in gen1_3[0]["messages"])
    verse = "And God said, Let there be light: and there was light."
    assert (
        question == "Quote Genesis 1:3 (KJV)."
        and answer == verse
        or (
            question.startswith("Continue Genesis 1:3 (KJV): ")
            and f"{question.split(': ', 1)[1]} {answer}" == verse
        )
    )


def test_arithmetic_answers_are_checked() -> None:
    splits = make_splits("arithmetic", seed=7, limit=500)
    for r in splits["train"] + splits["test"]:
        steps = STEP.findall(r["completion"])
        assert steps
        for a, op, b, result in steps:
            a, b, result = int(a), int(b), int(result)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == result >= 0
        assert int(steps[-1][3]) == r["answer"] and arithmetic_reward(r["completion"], r["answer"]) == 1.0
        assert is_test(r["prompt"]) == (r in splits["test"])


def test_sentiment_rows_drop_conflicting_duplicates(tmp_path, jsonl) -> None:
    source = jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"text": "很好用", "label": "pos"},
            {"text": "很好用", "label": "pos"},
            {"text": "一般般", "label": "pos"},
            {"text": "一般般", "label": "neg"},
            {"text": "太差了", "label": "neg"},
        ],
    )
    splits = make_splits("sentiment-zh", str(source))
    rows = splits["train"] + splits["test"]
    assert sorted(r["label"] for r in rows) == ["正面", "负面"]
    assert all(r["messages"][1]["content"] == r["label"] for r in rows)


@pytest.mark.parametrize(
    ("task", "file", "labels"),
    [
        ("sentiment-zh", "zh/review_sentiment.jsonl", {"正面", "负面"}),
        ("sentiment-en", "en/tweet_sentiment.jsonl", {"positive", "negative", "neutral"}),
    ],
)
def test_real_sentiment_corpora(task, file, labels) -> None:
    if not (SHARED / file).is_file():
        pytest.skip(f"{SHARED / file} is absent (the shared data folder is not checked out here)")
    splits = make_splits(task, str(SHARED / file), limit=2000)
    assert {r["label"] for r in splits["train"]} == labels
    assert prompts(splits["train"]).isdisjoint(prompts(splits["test"]))


def test_cli_writes_both_splits_and_a_manifest(tmp_path, capsys) -> None:
    out = tmp_path / "poems"
    assert main(["data", "make", "poems", "--out", str(out), "--source", "tang300", "--limit", "5"]) == 0
    assert "poems: 5 train, 5 test" in capsys.readouterr().out
    train = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(train) == 5 and json.loads((out / "manifest.json").read_text())["rows"] == {
        "train": 5,
        "test": 5,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonsense"], "unknown task 'nonsense'"),
        (["sentiment-en"], "needs --source PATH"),
        (["arithmetic", "--source", "kjv"], "synthetic"),
        (["sentiment-zh", "--source", "BAD"], r"reviews\.jsonl:2: label 'meh'"),
        (["poems", "--source", "kjv"], "missing field 'title'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message, jsonl) -> None:
    bad = jsonl(tmp_path / "reviews.jsonl", [{"text": "好", "label": "pos"}, {"text": "嗯", "label": "meh"}])
    args = [str(bad) if a == "BAD" else a for a in args]
    assert main(["data", "make", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and err.startswith("tinylm: error:")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", ["poems", "preferences"])
def test_select_form_keeps_exactly_one_form_and_the_split(tmp_path, task) -> None:
    src = tmp_path / task
    assert main(["data", "make", task, "--out", str(src), "--source", "tang300"]) == 0
    select_form(src, tmp_path / "five", "五言绝句")
    for split in ("train", "test"):
        rows = [json.loads(x) for x in (src / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        kept = [
            json.loads(x)
            for x in (tmp_path / "five" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        assert kept == [r for r in rows if r["form"] == "五言绝句"] and 0 < len(kept) < len(rows)


def test_cli_replaces_its_own_output_but_never_a_directory_with_other_files(tmp_path, capsys) -> None:
    out = tmp_path / "arith"
    args = ["data", "make", "arithmetic", "--out", str(out), "--limit", "5"]
    assert main(args) == 0 and main([*args[:-1], "7"]) == 0  # a rerun replaces the three files at once
    assert json.loads((out / "manifest.json").read_text())["limit"] == 7
    (out / "notes.txt").write_text("mine")
    assert main(args) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
