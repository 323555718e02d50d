"""A recipe: the run directory (`out`), the corpus (`data`), the `stages` in order, and one section per stage.

A section holds its stage command's own options (`tokenizer: {vocab_size: 4096}` is `tinylm tokenizer
train --vocab-size 4096`), less the paths the stage writes, which the pipeline owns. A stage's inputs
(`sft.model`) are options too: left unset, the pipeline wires them from earlier stages (`wiring.py`); set,
the recipe's value is used, so a recipe can fine-tune an imported model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from ..core import STAGES, load_command
from ..core.options import new_parser, option_errors
from ..errors import TinyLMError
from ..io import read_yaml, to_plain


def add_recipe_options(parser: ArgumentParser) -> None:
    """A recipe's fields as options of `parser`: the shared ones plus one section per stage."""
    parser.add_argument("--out", type=str, default="runs/demo", help="Run directory.")
    parser.add_argument("--data", type=str, default="shakespeare", help="Corpus: embedded name or path.")
    parser.add_argument("--stages", type=list[str], default=list(STAGES), help="Stages to run, in order.")
    for name, stage in STAGES.items():
        inputs = {**stage.inputs, **stage.optional}
        skip = {*inputs, *stage.writes, *stage.fixed, "overwrite"}
        parser.add_function_arguments(load_command(stage.command), nested_key=name, skip=skip)
        for param, kind in inputs.items():
            wired = "the recipe's data" if kind == "corpus" else f"the {kind} of the latest earlier stage"
            parser.groups[name].add_argument(
                f"--{name}.{param}", type=str | None, default=None, help=f"Default: {wired}."
            )
        parser.set_defaults({f"{name}.{key}": value for key, value in stage.defaults.items()})


def add_pipeline_options(parser: ArgumentParser) -> None:
    """`tinylm pipeline`'s options: a recipe's fields and --overwrite."""
    add_recipe_options(parser)
    parser.add_argument("--overwrite", type=bool, default=False, help="Start a different run afresh.")


def read_recipe(recipe: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """A recipe file's fields (or the dict itself; none for None)."""
    if recipe is None or isinstance(recipe, dict):
        return dict(recipe or {})
    if not Path(recipe).is_file():
        raise TinyLMError(f"recipe {recipe} not found")
    fields = read_yaml(recipe)
    if not isinstance(fields, dict):
        raise TinyLMError(f"recipe {recipe} must be a YAML mapping (out, data, stages, one key per stage)")
    return fields


def resolve_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's fields, type-checked and completed with every default."""
    parser = new_parser("recipe")
    add_recipe_options(parser)
    with option_errors("invalid recipe: "):
        return to_plain(parser.parse_object(recipe).as_dict())
