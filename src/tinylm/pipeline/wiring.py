"""Each stage's full options: its recipe section, the paths it writes, and its inputs from earlier stages."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..core import STAGES
from ..errors import TinyLMError


def stage_options(recipe: dict[str, Any], run: Path) -> dict[str, dict[str, Any]]:
    """Options of every stage in `recipe["stages"]`, stage `name` writing into `run/name`.

    An input the recipe leaves unset comes from the latest earlier stage that outputs its kind (the
    recipe's `data` is the corpus); a required input no earlier stage provides is an error naming both.
    """
    names = recipe["stages"]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise TinyLMError(f"unknown stage(s) {unknown}; known stages: {list(STAGES)}")
    twice = [s for s, n in Counter(names).items() if n > 1]
    if twice:
        raise TinyLMError(
            f"stage(s) {twice} appear more than once in stages; each runs once, in its own directory"
        )
    latest: dict[str, str] = {"corpus": recipe["data"]}
    options = {}
    for name in names:
        stage, here = STAGES[name], run / name
        opts = {**recipe[name], **stage.fixed, **{p: str(here / path) for p, path in stage.writes.items()}}
        for param, kind in {**stage.inputs, **stage.optional}.items():
            if opts.get(param) is None and kind in latest:
                opts[param] = latest[kind]
            elif opts.get(param) is None and param in stage.inputs:
                raise TinyLMError(_missing(name, param, kind))
        options[name] = opts
        latest.update({kind: str(here / path) for kind, path in stage.outputs.items()})
    return options


def _missing(name: str, param: str, kind: str) -> str:
    makers = [s for s, stage in STAGES.items() if kind in stage.outputs]
    return (
        f"stage {name} needs its {param} (a {kind}), but no stage before it outputs one "
        f"({' or '.join(makers)} would); put one earlier in `stages`, or set {name}.{param} in the recipe"
    )
