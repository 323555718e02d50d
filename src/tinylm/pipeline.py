"""The main job: run a recipe's stages in order inside one run directory.

A recipe is YAML: a run directory (`out`), a corpus (`data`), the list of `stages`, and one section per
stage whose keys are that stage command's own options (`tokenizer: {vocab_size: 4096}` is
`tinylm tokenizer train --vocab-size 4096`). The pipeline supplies what links the stages (the corpus, the
previous stages' outputs, each stage's output directory) and records every finished stage with its
options in `pipeline.json`, so a rerun skips finished stages, resumes an interrupted one, and refuses
to mix two different runs in one directory. At the end it writes `report.md`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .cli import call_command, load_command
from .errors import TinyLMError
from .io import atomic_file, first_difference, read_json, to_plain, write_json, write_yaml


@dataclass(frozen=True)
class Stage:
    """One step of the main job: a CLI command plus how the pipeline feeds it."""

    command: str
    """Key of the command in `tinylm.cli.COMMANDS`."""
    wire: Callable[[dict[str, Any], Path], dict[str, Any]]
    """Arguments the pipeline supplies, from the recipe and the run directory."""
    summary: str
    """Module:function returning a Markdown summary of the stage's output directory, for report.md."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Defaults for the command's required options, so a recipe that skips the stage need not set them."""


STAGES: dict[str, Stage] = {
    "tokenizer": Stage(
        command="tokenizer train",
        wire=lambda recipe, run: {"data": recipe["data"], "out": str(run / "tokenizer")},
        summary="tinylm.data.bpe:summarize",
    ),
    "shards": Stage(
        command="data prepare",
        wire=lambda recipe, run: {
            "data": recipe["data"],
            "tokenizer": str(run / "tokenizer"),
            "out": str(run / "shards"),
        },
        summary="tinylm.data.shards:summarize",
    ),
    "pretrain": Stage(
        command="pretrain",
        wire=lambda recipe, run: {"shards": str(run / "shards"), "out": str(run / "pretrain")},
        summary="tinylm.train.report:summarize_run",
    ),
    "sft_data": Stage(
        command="data make",
        wire=lambda recipe, run: {"out": str(run / "sft_data")},
        summary="tinylm.tasks.make:summarize",
        defaults={"task": "poems"},
    ),
    "sft": Stage(
        command="sft",
        wire=lambda recipe, run: {
            "model": str(run / "pretrain" / "model"),
            "data": str(run / "sft_data"),
            "out": str(run / "sft"),
        },
        summary="tinylm.train.report:summarize_run",
    ),
    "preference_data": Stage(
        command="data make",
        wire=lambda recipe, run: {"task": "preferences", "out": str(run / "preference_data")},
        summary="tinylm.tasks.make:summarize",
    ),
    "reward": Stage(
        command="reward train",
        wire=lambda recipe, run: {
            "data": str(run / "preference_data"),
            "model": str(run / "sft" / "model"),
            "out": str(run / "reward"),
        },
        summary="tinylm.train.report:summarize_run",
    ),
    "ppo": Stage(
        command="ppo",
        wire=lambda recipe, run: {
            "data": str(run / "sft_data"),
            "model": str(run / "sft" / "model"),
            "reward_model": str(run / "reward" / "model"),
            "out": str(run / "ppo"),
        },
        summary="tinylm.train.report:summarize_run",
    ),
    "dpo": Stage(
        command="dpo",
        wire=lambda recipe, run: {
            "data": str(run / "preference_data"),
            "model": str(run / "sft" / "model"),
            "out": str(run / "dpo"),
        },
        summary="tinylm.train.report:summarize_run",
    ),
    "grpo": Stage(
        command="grpo",
        wire=lambda recipe, run: {
            "data": str(run / "sft_data"),
            "model": str(run / "sft" / "model"),
            "out": str(run / "grpo"),
        },
        summary="tinylm.train.report:summarize_run",
    ),
    "chat": Stage(
        command="chat",
        wire=lambda recipe, run: {
            "model": str(_latest_model(recipe, run, "chat")),
            "transcript": str(run / "chat" / "transcript.md"),
        },
        summary="tinylm.infer.chat:summarize",
        defaults={"sampling": {"temperature": 0.0, "max_new_tokens": 96}, "say": ["Hello!"]},
    ),
}


def _latest_model(recipe: dict[str, Any], run: Path, stage: str) -> Path:
    """The model of the last stage before `stage` in the recipe that trains one (SFT, PPO, DPO or GRPO)."""
    stages = recipe.get("stages", [])
    before = stages[: stages.index(stage)] if stage in stages else stages
    trained = [s for s in before if s in ("pretrain", "sft", "ppo", "dpo", "grpo")]
    return run / (trained[-1] if trained else "sft") / "model"


def _summarize(stage: Stage, out: Path) -> str:
    module, name = stage.summary.split(":")
    return getattr(importlib.import_module(module), name)(out)


def add_arguments(parser) -> None:
    """Recipe options for the `tinylm pipeline` parser: shared fields plus one section per stage."""
    parser.add_argument("--out", type=str, default="runs/demo", help="Run directory.")
    parser.add_argument("--data", type=str, default="shakespeare", help="Corpus: embedded name or path.")
    parser.add_argument("--stages", type=list[str], default=list(STAGES), help="Stages to run, in order.")
    for name, stage in STAGES.items():
        wired = set(stage.wire({"data": ""}, Path()))
        parser.add_function_arguments(
            load_command(stage.command), nested_key=name, skip=wired | {"overwrite"}
        )
        parser.set_defaults({f"{name}.{key}": value for key, value in stage.defaults.items()})


def resolve_recipe(recipe: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A recipe file or dict, validated and completed with every default."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    try:
        if isinstance(recipe, dict):
            cfg = parser.parse_object(recipe)
        else:
            if not Path(recipe).is_file():
                raise TinyLMError(f"recipe {recipe} not found")
            cfg = parser.parse_path(str(recipe))
    except TinyLMError:
        raise
    except Exception as e:  # jsonargparse reports unknown keys and bad types this way
        raise TinyLMError(f"invalid recipe: {e}") from None
    return to_plain(cfg.as_dict())


def run_pipeline(recipe: str | Path | dict[str, Any], overwrite: bool = False, **overrides: Any) -> Path:
    """Run a recipe's stages in order into one run directory, skipping stages already done.

    Args:
        recipe: YAML recipe file (e.g. recipes/demo.yaml) or an already resolved recipe dict.
        overwrite: Delete the run directory first if it holds a different run.
        overrides: Recipe fields replacing the file's (as the CLI's --section.option flags do).

    Returns:
        The run directory, holding one folder per stage, pipeline.json and report.md.
    """
    recipe = resolve_recipe(recipe if not overrides else {**_as_dict(recipe), **overrides})
    run = Path(recipe["out"])
    unknown = [s for s in recipe["stages"] if s not in STAGES]
    if unknown:
        raise TinyLMError(f"unknown stage(s) {unknown}; known stages: {list(STAGES)}")
    state = _load_state(run, recipe, overwrite)
    write_yaml(run / "recipe.yaml", recipe)
    for i, name in enumerate(recipe["stages"], 1):
        stage = STAGES[name]
        args = {**recipe[name], **stage.wire(recipe, run)}
        done = state["stages"].get(name)
        if done is not None:
            print(f"[{i}/{len(recipe['stages'])}] {name}: already done, skipping")
            continue
        print(f"[{i}/{len(recipe['stages'])}] {name}")
        start = time.perf_counter()
        call_command(stage.command, args)
        state["stages"][name] = {
            "options": to_plain(args),
            "seconds": round(time.perf_counter() - start, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(run / "pipeline.json", state)
    write_report(run, recipe, state)
    print(f"report: {run / 'report.md'}")
    return run


def _as_dict(recipe: str | Path | dict[str, Any]) -> dict[str, Any]:
    import yaml

    if isinstance(recipe, dict):
        return recipe
    with open(recipe, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _load_state(run: Path, recipe: dict[str, Any], overwrite: bool) -> dict[str, Any]:
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
        if name not in STAGES:
            continue
        now = to_plain({**recipe[name], **STAGES[name].wire(recipe, run)})
        diff = first_difference(done["options"], now, f"{name}.")
        if diff and not overwrite:
            raise TinyLMError(
                f"run directory {run} already holds a different run: {diff}. "
                "Choose another --out, or pass --overwrite true to start it afresh"
            )
        if diff:
            import shutil

            shutil.rmtree(run)
            return {"stages": {}}
    return state


def write_report(run: Path, recipe: dict[str, Any], state: dict[str, Any]) -> None:
    """report.md: what ran, how long it took, and each stage's own summary."""
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
        lines += [_summarize(STAGES[name], run / name).rstrip(), ""]
    with atomic_file(run / "report.md") as f:
        f.write("\n".join(lines))
