"""Arithmetic word problems in English, for GRPO with a verifiable reward and for SFT.

Each row is `{"prompt", "completion", "answer", "level"}`: the problem, a worked solution whose every step
is an equation ("12 + 7 = 19.") ending in "The answer is N.", N as an integer, and the problem's difficulty.
Problems come from a handful of templates (add, take away, multiply, share equally, give change), with
numbers the seed draws; every intermediate value is a non-negative integer. `arithmetic_reward` in
checks a model's last number against `answer`. Rows are split by prompt text, so a
held-out problem is never trained on, whatever the seed.

Difficulty levels (`LEVELS`), mixed in the proportions of `MIX`: 1 = one step on one-digit numbers,
2 = one step on two-digit sums and differences or times tables, 3 = two or three steps. Level 1 exists
because RL needs a starting policy that is sometimes right: GRPO learns only from groups whose answers
differ in reward, and the demo's ~1M-parameter model after two minutes of SFT gets only a few percent of
levels 2-3 right (it has not yet learned to copy the operands out of the question), so without easy
problems nearly every group scores all zeros. Per-level accuracy is read from the held-out rows' `level`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import partial

from .base import Rows, Task

POOL = 20_000  # problems drawn; duplicates are dropped, the rest split about 90 / 10
# fmt: off
NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack",
         "Kate", "Leo", "Mia", "Noah", "Olivia", "Paul", "Ruby", "Sam", "Tara", "Will"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells", "cards",
         "balloons", "eggs", "coins"]
# fmt: on
Step = tuple[int, str, int, int]  # (a, op, b, result)


def _ops(a: int, op: str, b: int) -> Step:
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return a, op, b, result


def _gain(r: random.Random, name: str, item: str, low: int = 2, high: int = 99) -> tuple[str, list[Step]]:
    a, b = r.randint(low, high), r.randint(low, high)
    question = f"{name} has {a} {item}. Then {name} gets {b} more. How many {item} does {name} have now?"
    return question, [_ops(a, "+", b)]


def _loss(r: random.Random, name: str, item: str, low: int = 10, high: int = 99) -> tuple[str, list[Step]]:
    a = r.randint(low, high)
    b = r.randint(1, a - 1)
    friend = r.choice([n for n in NAMES if n != name])
    question = (
        f"{name} has {a} {item} and gives {b} of them to {friend}. How many {item} does {name} have left?"
    )
    return question, [_ops(a, "-", b)]


def _boxes(r: random.Random, name: str, item: str) -> tuple[str, list[Step]]:
    a, b = r.randint(2, 12), r.randint(2, 12)
    question = f"{name} buys {a} boxes of {item}. Each box holds {b} {item}. How many {item} does {name} buy?"
    return question, [_ops(a, "*", b)]


def _share(r: random.Random, name: str, item: str) -> tuple[str, list[Step]]:
    each, friends = r.randint(2, 12), r.randint(2, 9)
    total = each * friends
    question = (
        f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    )
    return question, [_ops(total, "/", friends)]


def _boxes_then_give(r: random.Random, name: str, item: str) -> tuple[str, list[Step]]:
    a, boxes, per = r.randint(1, 30), r.randint(2, 9), r.randint(2, 12)
    bought = _ops(boxes, "*", per)
    have = _ops(a, "+", bought[3])
    gave = r.randint(1, have[3] - 1)
    question = (
        f"{name} has {a} {item}, buys {boxes} packs of {per} {item} each, and then gives away {gave}. "
        f"How many {item} does {name} have now?"
    )
    return question, [bought, have, _ops(have[3], "-", gave)]


def _change(r: random.Random, name: str, item: str) -> tuple[str, list[Step]]:
    price, count = r.randint(1, 9), r.randint(2, 9)
    cost = _ops(price, "*", count)
    paid = r.choice([b for b in (20, 50, 100) if b > cost[3]])
    question = (
        f"{item.capitalize()} cost {price} dollars each. {name} buys {count} and pays with a {paid}-dollar bill. "
        f"How many dollars of change does {name} get?"
    )
    return question, [cost, _ops(paid, "-", cost[3])]


Template = Callable[[random.Random, str, str], tuple[str, list[Step]]]
LEVELS: dict[int, list[Template]] = {
    1: [partial(_gain, low=1, high=9), partial(_loss, low=2, high=9)],  # one step, one-digit numbers
    2: [_gain, _loss, _boxes, _share],  # one step, two-digit sums and differences, tables to 12
    3: [_boxes_then_give, _change],  # two or three steps
}
MIX = {1: 0.4, 2: 0.35, 3: 0.25}
"""Share of the drawn problems at each level."""


def solution(steps: list[Step]) -> str:
    """The worked solution: one equation per step, then "The answer is N."."""
    lines = [f"{a} {op} {b} = {result}." for a, op, b, result in steps]
    return " ".join([*lines, f"The answer is {steps[-1][3]}."])


def rows(source: str | None, rng: random.Random) -> Rows:
    seen = set()
    for _ in range(POOL):
        level = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        question, steps = rng.choice(LEVELS[level])(rng, rng.choice(NAMES), rng.choice(ITEMS))
        if question in seen:
            continue
        seen.add(question)
        row = {"prompt": question, "completion": solution(steps), "answer": steps[-1][3], "level": level}
        yield question, row


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The last number written in `text` (commas as thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def arithmetic_reward(completion: str, answer: float) -> float:
    """1.0 when the last number in `completion` equals `answer`, else 0.0.

    Reasoning may come first ("12 + 7 = 19, 19 - 3 = 16. The answer is 16."); only the final number is
    judged, the convention of GSM8K-style verifiable rewards.
    """
    value = final_number(completion)
    return float(value is not None and abs(value - float(answer)) < 1e-6)


def reward(completions: list[str], answer: list[float], **_) -> list[float]:
    """`arithmetic_reward` of each completion against its row's answer."""
    return [arithmetic_reward(text, a) for text, a in zip(completions, answer, strict=True)]


TASK = Task("arithmetic", "an English word problem -> worked steps and the answer", rows, reward="arithmetic")
