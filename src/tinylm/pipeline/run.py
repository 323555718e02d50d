"""The main job: run a recipe's stages in order inside one run directory.

Every finished stage is recorded with its options in `pipeline.json`, so a rerun skips finished stages,
resumes an interrupted one, and refuses to mix two different runs in one directory. Every stage's options
are checked before the first one runs, so a typo in the last stage does not wait for the first to finish.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core import STAGES, Call, bind_command
from ..errors import TinyLMError
from ..io import first_difference, read_json, to_plain, write_json, write_yaml
from .recipe import read_recipe, resolve_recipe
from .report import write_report
from .wiring import stage_options


def run_pipeline(
    recipe: str | Path | dict[str, Any] | None = None, overwrite: bool = False, **overrides: Any
) -> Path:
    """Run a recipe's stages in order into one run directory, skipping stages already done.

    Args:
        recipe: YAML recipe file (e.g. recipes/demo.yaml) or a recipe dict; None: only `overrides`.
        overwrite: Delete the run directory first if it holds a different run.
        overrides: Recipe fields replacing the recipe's own (`out="runs/x"`, `stages=[...]`).

    Returns:
        The run directory, holding one folder per stage, recipe.yaml, pipeline.json and report.md.
    """
    recipe = resolve_recipe({**read_recipe(recipe), **overrides})
    run = Path(recipe["out"])
    options = stage_options(recipe, run)
    calls = {name: _checked(name, opts) for name, opts in options.items()}
    state = _load_state(run, options, overwrite)
    write_yaml(run / "recipe.yaml", recipe)
    for i, name in enumerate(recipe["stages"], 1):
        if name in state["stages"]:
            print(f"[{i}/{len(calls)}] {name}: already done, skipping")
            continue
        print(f"[{i}/{len(calls)}] {name}")
        start = time.perf_counter()
        calls[name]()
        state["stages"][name] = {
            "options": to_plain(options[name]),
            "seconds": round(time.perf_counter() - start, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(run / "pipeline.json", state)
    write_report(run, recipe, state)
    print(f"report: {run / 'report.md'}")
    return run


def _checked(name: str, options: dict[str, Any]) -> Call:
    try:
        return bind_command(STAGES[name].command, options)
    except TinyLMError as e:
        raise TinyLMError(f"stage {name}: {e}") from None


def _load_state(run: Path, options: dict[str, dict[str, Any]], overwrite: bool) -> dict[str, Any]:
    """The record of finished stages; refuses a directory that holds another run's stages."""
    path = run / "pipeline.json"
    if not path.exists():
        if run.exists() and any(run.iterdir()) and not overwrite:
            raise TinyLMError(
                f"run directory {run} is not empty and holds no pipeline.json; choose another --out"
            )
        return {"stages": {}}
    state = read_json(path)
    for name, done in state["stages"].items():
        if name not in options:
            continue
        diff = first_difference(done["options"], to_plain(options[name]), f"{name}.")
        if diff and not overwrite:
            raise TinyLMError(
                f"run directory {run} already holds a different run: {diff}. "
                "Choose another --out, or pass --overwrite true to start it afresh"
            )
        if diff:
            shutil.rmtree(run)
            return {"stages": {}}
    return state
