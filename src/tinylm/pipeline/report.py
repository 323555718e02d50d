"""report.md: what a run did, how long each stage took, and each stage's own summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core import STAGES
from ..core.commands import load
from ..io import atomic_file


def write_report(run: Path, recipe: dict[str, Any], state: dict[str, Any]) -> None:
    """Write `run`/report.md for the finished stages of `recipe`, in the recipe's order."""
    lines = [
        f"# tinylm run `{run}`",
        "",
        f"Corpus: `{recipe['data']}`. Stages: {' → '.join(recipe['stages'])}. "
        "The resolved recipe is in `recipe.yaml`; rerun with `tinylm pipeline "
        f"{run / 'recipe.yaml'}`.",
        "",
    ]
    for name in recipe["stages"]:
        done = state["stages"].get(name)
        if done is None:
            continue
        lines += [f"## {name}", "", f"Finished {done['finished']} in {done['seconds']:.1f} s.", ""]
        lines += [load(STAGES[name].summary)(run / name).rstrip(), ""]
    with atomic_file(run / "report.md") as f:
        f.write("\n".join(lines))
