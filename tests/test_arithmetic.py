"""Arithmetic difficulty levels: each row's `level` matches what its problem asks, and the mix keeps
every level present in both splits (GRPO's easy start and the per-level held-out accuracy depend on it)."""

from __future__ import annotations

import re
from collections import Counter

from tinylm.tasks.arithmetic import MIX
from tinylm.tasks.make import make_splits

STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")


def test_levels_match_their_problems_and_the_mix() -> None:
    splits = make_splits("arithmetic", seed=3)
    for name, rows in splits.items():
        counts = Counter(r["level"] for r in rows)
        assert set(counts) == {1, 2, 3}
        for level, share in MIX.items():  # drawn shares, less duplicates (mostly easy ones)
            assert abs(counts[level] / len(rows) - share) < 0.08, (name, counts)
    for r in splits["train"][:2000]:
        steps = [(int(a), op, int(b)) for a, op, b, _ in STEP.findall(r["completion"])]
        if r["level"] == 1:
            assert len(steps) == 1 and steps[0][1] in "+-" and max(steps[0][0], steps[0][2]) <= 9
        elif r["level"] == 2:
            assert len(steps) == 1 and max(steps[0][0], steps[0][2]) >= 2
        else:
            assert len(steps) in (2, 3)


def test_level_one_answers_are_small_and_nonnegative() -> None:
    rows = [r for r in make_splits("arithmetic", seed=0, limit=400)["train"] if r["level"] == 1]
    assert rows and all(0 <= r["answer"] <= 18 for r in rows)
