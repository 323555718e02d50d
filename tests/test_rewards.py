"""Programmatic rewards on real Tang-300 poems and their corruptions, and arithmetic answer parsing."""

from __future__ import annotations

import json
import lzma
import random
import re

import pytest

from tinylm.data import CORPORA
from tinylm.errors import TinyLMError
from tinylm.tasks.arithmetic import arithmetic_reward
from tinylm.tasks.poetry import (
    detect_form,
    is_exact_form,
    poem_form_score,
    poem_reward,
    poem_rhyme_score,
)
from tinylm.tasks.preferences import corrupt

NOTE = re.compile(r"[（(][^（()）]*[)）]")


def tang300(form: str) -> list[str]:
    """The texts of the Tang-300 poems labelled `form`, editors' notes removed."""
    with lzma.open(CORPORA["tang300"].path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return ["\n".join(NOTE.sub("", p) for p in r["paragraphs"]) for r in rows if r["form"] == form]


def test_every_real_wuyan_jueju_has_the_exact_form_and_nearly_all_rhyme() -> None:
    poems = tang300("五言绝句")
    assert len(poems) == 29
    assert all(poem_form_score(p, "五言绝句") == 1.0 for p in poems)
    assert all(detect_form(p) == "五言绝句" for p in poems)
    assert sum(poem_reward(p, "五言绝句") == 1.0 for p in poems) >= 27


def test_real_qiyan_jueju_keep_their_form() -> None:
    poems = tang300("七言绝句")
    assert sum(is_exact_form(p, "七言绝句") for p in poems) >= len(poems) - 2
    assert not any(is_exact_form(p, "五言绝句") for p in poems)


@pytest.mark.parametrize("kind", ["longer", "shorter", "punctuation"])
def test_form_corruptions_lose_the_exact_form(kind) -> None:
    rng = random.Random(0)
    for poem in tang300("五言绝句"):
        bad = corrupt(poem, kind, rng, ("山",))
        assert not is_exact_form(bad, "五言绝句")
        assert poem_form_score(bad, "五言绝句") < 1 and poem_reward(bad, "五言绝句") < poem_reward(
            poem, "五言绝句"
        )


def test_rhyme_corruption_keeps_form_and_loses_rhyme() -> None:
    rng = random.Random(0)
    pool = tuple("山人秋流花家时声云风")
    for poem in tang300("五言绝句"):
        bad = corrupt(poem, "rhyme", rng, pool)
        if bad is None:  # only poems that rhyme are corrupted in rhyme
            assert poem_rhyme_score(poem) < 1
            continue
        assert (
            is_exact_form(bad, "五言绝句")
            and poem_rhyme_score(bad) == 0
            and poem_reward(bad, "五言绝句") == 0.5
        )


def test_form_criteria_by_hand() -> None:
    poem = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"
    assert is_exact_form(poem, "五言绝句") and is_exact_form(poem.replace("\n", ""), "五言绝句")
    assert not is_exact_form(poem, "七言绝句") and poem_form_score(poem, "七言绝句") == pytest.approx(2 / 3)
    assert poem_form_score(poem[:-1], "五言绝句") == pytest.approx(1 - 1 / 12)  # no final full stop
    assert poem_form_score(poem.replace("，", ",", 1), "五言绝句") < 1  # an ASCII comma is not a mark
    assert poem_form_score("", "五言绝句") == 0.0
    with pytest.raises(TinyLMError, match="unknown poem form"):
        poem_form_score(poem, "十言绝句")


def test_rhyme_by_hand() -> None:
    assert poem_rhyme_score("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。") == 1.0  # liu / lou
    assert poem_rhyme_score("白日依山尽，黄河入海流。\n欲穷千里目，更上一层山。") == 0.0
    assert (
        poem_rhyme_score("朱雀桥边野草花，乌衣巷口夕阳斜。\n旧时王谢堂前燕，飞入寻常百姓家。") == 1.0
    )  # 斜 read xia
    assert poem_rhyme_score("一二三四五。") == 0.0


@pytest.mark.parametrize(
    ("completion", "answer", "reward"),
    [
        ("12 + 7 = 19. 19 - 3 = 16. The answer is 16.", 16, 1.0),
        ("The answer is 1,234.", 1234, 1.0),
        ("It is -5", -5, 1.0),
        ("3.0", 3, 1.0),
        ("16 apples, or maybe 17", 16, 0.0),
        ("I do not know.", 16, 0.0),
    ],
)
def test_arithmetic_reward_reads_the_final_number(completion, answer, reward) -> None:
    assert arithmetic_reward(completion, answer) == reward
