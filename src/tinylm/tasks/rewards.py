"""Rewards: programs that score answers, by name, in the shape TRL uses.

A reward is `reward(completions, **row_fields) -> list[float]`: one score per completion, with each field of
the prompts' rows passed as a list aligned with the completions (`form=[...]`, `answer=[...]`). RL stages,
`tinylm data judge` and evaluation take a registered name or any such callable from Python. The fields a
reward needs are the parameters it names, so a row that lacks one is refused up front, with its file:line.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import TinyLMError

Reward = Callable[..., list[float]]

REWARDS: dict[str, str] = {
    "poem": "tinylm.tasks.poems:reward",
    "exact_form": "tinylm.tasks.poems:exact_form",
    "form_score": "tinylm.tasks.poems:form_score",
    "arithmetic": "tinylm.tasks.arithmetic:reward",
    "label": "tinylm.tasks.sentiment:reward",
    "verse": "tinylm.tasks.kjv:reward",
}
"""Reward name -> "module:function", imported on first use."""


def get_reward(reward: str | Reward) -> Reward:
    """The registered reward `reward`, or the callable itself."""
    if callable(reward):
        return reward
    if reward not in REWARDS:
        raise TinyLMError(f"unknown reward {reward!r}; expected one of {', '.join(REWARDS)} or a callable")
    module, name = REWARDS[reward].split(":")
    return getattr(importlib.import_module(module), name)


def reward_name(reward: str | Reward) -> str:
    """How a reward is named in configs and logs."""
    return reward if isinstance(reward, str) else getattr(reward, "__name__", type(reward).__name__)


def reward_fields(reward: str | Reward) -> list[str]:
    """The row fields `reward` reads: the parameters it names besides `completions` (without a default)."""
    params = inspect.signature(get_reward(reward)).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.name != "completions" and p.kind in kinds and p.default is p.empty]


def check_rows(reward: str | Reward, rows: list) -> list:
    """`rows` (each with `.fields` and `.where`), after a TinyLMError naming the first that lacks a field
    `reward` reads."""
    needed = reward_fields(reward)
    for row in rows:
        for name in needed:
            if name not in row.fields:
                raise TinyLMError(
                    f"{row.where} has no {name!r} field, which the {reward_name(reward)} reward needs"
                )
    return rows


def score(reward: str | Reward, completions: list[str], rows: list[dict[str, Any]]) -> list[float]:
    """One score per completion; every field that all `rows` carry is passed as a column."""
    fn = get_reward(reward)
    shared = set.intersection(*(set(r) for r in rows)) if rows else set()
    columns = {k: [r[k] for r in rows] for k in shared if k != "completions"}
    return [float(x) for x in fn(completions, **columns)]
