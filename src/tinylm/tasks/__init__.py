"""Tasks: instruction data built from real corpora, each with the reward that checks its answers.

A task (`base.Task`) owns its rows, its reward and how it is evaluated; `tinylm data make TASK` writes its
train / test split, RL optimises its reward, `tinylm data judge` ranks answers by it, and `tinylm eval run
TASK` scores a model on its held-out rows. Adding a task is one module defining a `Task` and one line in `TASKS`.

| task          | rows                                                                      | default source |
|---------------|---------------------------------------------------------------------------|----------------|
| poems         | "写一首五言绝句，题为《X》。" -> a real Tang quatrain of that form and title | tang           |
| preferences   | the same prompt, chosen = the real poem, rejected = it corrupted in form or rhyme | tang   |
| sentiment-zh  | a Chinese review -> 正面 / 负面                                              | (a path)       |
| sentiment-en  | a tweet -> positive / negative / neutral                                  | (a path)       |
| kjv           | continue a King James verse from its reference and opening, or quote it   | kjv            |
| arithmetic    | an English word problem -> worked steps and the answer (with `answer`)    | (synthetic)    |
"""

from __future__ import annotations

import importlib

from ..errors import TinyLMError
from .base import Rows, Task, is_test, records

TASKS: dict[str, str] = {
    "poems": "tinylm.tasks.poems:TASK",
    "preferences": "tinylm.tasks.preferences:TASK",
    "sentiment-zh": "tinylm.tasks.sentiment:REVIEWS",
    "sentiment-en": "tinylm.tasks.sentiment:TWEETS",
    "kjv": "tinylm.tasks.kjv:TASK",
    "arithmetic": "tinylm.tasks.arithmetic:TASK",
}
"""Task name -> "module:attribute" of its `Task`, imported on first use."""


def get_task(name: str | Task) -> Task:
    """The registered task `name` (a Task passes through, so Python users can bring their own)."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise TinyLMError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    module, attribute = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def metrics_for(reward) -> tuple[str, ...]:
    """The metrics evaluation reports beside `reward`: those of every task that `reward` scores."""
    found: list[str] = []
    for name in TASKS:
        task = get_task(name)
        if task.reward is not None and task.reward == reward:
            found += [m for m in task.metrics if m not in found]
    return tuple(found)


__all__ = ["TASKS", "Rows", "Task", "get_task", "is_test", "metrics_for", "records"]
