"""The pinyin input method: typed pinyin is split into syllables every way it can be, the lattice holds
each span's characters and phrases, Viterbi finds the exact best path, and `tinylm ime` works on the command
line and interactively."""

from __future__ import annotations

import pytest

from tinylm.errors import TinyLMError
from tinylm.ime.lattice import build_lattice
from tinylm.ime.syllables import read_pinyin, syllables


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
