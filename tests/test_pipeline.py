"""The main job: stages run in order, finished stages are skipped, different runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tinylm.cli import main
from tinylm.core import STAGES, bind_command
from tinylm.errors import TinyLMError
from tinylm.io import read_yaml
from tinylm.pipeline.recipe import resolve_recipe
from tinylm.pipeline.wiring import stage_options

TEXT = "\n".join(f"Line {i}: to be, or not to be, that is the question {i * 7}." for i in range(400))


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "out": str(tmp_path / "run"),
                "data": str(corpus),
                "stages": ["tokenizer", "shards"],
                "tokenizer": {"vocab_size": 300},
                "shards": {"val_fraction": 0.2},
            }
        )
    )
    return path


def test_pipeline_runs_stages_and_writes_report(recipe: Path, tmp_path: Path) -> None:
    assert main(["pipeline", str(recipe)]) == 0
    run = tmp_path / "run"
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["tokens"] > 0
    state = json.loads((run / "pipeline.json").read_text())
    assert list(state["stages"]) == ["tokenizer", "shards"]
    assert state["stages"]["tokenizer"]["options"]["vocab_size"] == 300
    report = (run / "report.md").read_text()
    assert "## tokenizer" in report and "## shards" in report
    assert yaml.safe_load((run / "recipe.yaml").read_text())["tokenizer"]["vocab_size"] == 300


def test_pipeline_skips_finished_stages(recipe: Path, tmp_path: Path, capsys) -> None:
    assert main(["pipeline", str(recipe)]) == 0
    tok = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    before = tok.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "tokenizer: already done" in out and "shards: already done" in out
    assert tok.stat().st_mtime_ns == before


def test_pipeline_runs_only_missing_stages(recipe: Path, tmp_path: Path, capsys) -> None:
    assert main(["pipeline", str(recipe), "--stages", "[tokenizer]"]) == 0
    assert not (tmp_path / "run" / "shards").exists()
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "tokenizer: already done" in out and "[2/2] shards" in out
    assert (tmp_path / "run" / "shards" / "manifest.json").is_file()


def test_pipeline_refuses_a_different_run(recipe: Path, tmp_path: Path, capsys) -> None:
    assert main(["pipeline", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["pipeline", str(recipe), "--tokenizer.vocab-size", "320"]) == 2
    err = capsys.readouterr().err
    assert "already holds a different run" in err and "tokenizer.vocab_size" in err
    assert "Traceback" not in err
    assert main(["pipeline", str(recipe), "--tokenizer.vocab-size", "320", "--overwrite", "true"]) == 0
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert state["stages"]["tokenizer"]["options"]["vocab_size"] == 320


def test_pipeline_unknown_stage_and_missing_recipe(recipe: Path, tmp_path: Path, capsys) -> None:
    assert main(["pipeline", str(recipe), "--stages", "[tokenizer, nonsense]"]) == 2
    assert "unknown stage" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["pipeline", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err


def test_pipeline_python_api(recipe: Path, tmp_path: Path) -> None:
    from tinylm import run_pipeline

    run = run_pipeline(recipe, stages=["tokenizer"])
    assert (run / "tokenizer" / "tokenizer_config.json").is_file()
    assert json.loads((run / "pipeline.json").read_text())["stages"].keys() == {"tokenizer"}
    fields = {"data": str(tmp_path / "corpus.txt"), "tokenizer": {"vocab_size": 300}}  # no recipe file
    run = run_pipeline(out=str(tmp_path / "run2"), stages=["tokenizer"], **fields)
    assert (run / "tokenizer" / "tokenizer.json").is_file()


def wired(tmp_path: Path, stages: list[str], **sections) -> dict:
    """Each stage's options for a recipe with these stages, as the pipeline would run them."""
    recipe = resolve_recipe(
        {"out": str(tmp_path / "run"), "data": "corpus.txt", "stages": stages, **sections}
    )
    return stage_options(recipe, tmp_path / "run")


def test_stages_take_their_inputs_from_the_latest_stage_that_outputs_them(tmp_path: Path) -> None:
    stages = ["tokenizer", "shards", "pretrain", "sft_data", "sft", "grpo", "preference_data", "dpo", "chat"]
    options = wired(tmp_path, stages)
    run = tmp_path / "run"
    assert options["tokenizer"]["data"] == options["shards"]["data"] == "corpus.txt"
    assert options["shards"]["tokenizer"] == str(run / "tokenizer")
    assert options["pretrain"]["shards"] == str(run / "shards")
    assert options["sft"]["model"] == str(run / "pretrain" / "model")
    assert options["sft"]["data"] == options["grpo"]["data"] == str(run / "sft_data")
    assert options["grpo"]["model"] == options["dpo"]["model"] == str(run / "sft" / "model")  # both from SFT
    assert options["dpo"]["data"] == str(run / "preference_data")
    assert options["preference_data"]["task"] == "preferences" and options["sft_data"]["task"] == "poems"
    assert options["chat"]["model"] == str(run / "dpo" / "model")  # the last model trained
    assert options["chat"]["transcript"] == str(run / "chat" / "transcript.md")
    assert options["dpo"]["out"] == str(run / "dpo")


def test_judged_pairs_from_the_sft_model_feed_the_reward_model(tmp_path: Path) -> None:
    stages = ["tokenizer", "shards", "pretrain", "sft_data", "sft", "judge", "reward", "ppo"]
    options, run = wired(tmp_path, stages), tmp_path / "run"
    assert options["judge"]["model"] == str(run / "sft" / "model")
    assert options["judge"]["data"] == str(run / "sft_data")
    assert options["reward"]["data"] == str(run / "judge")
    assert options["ppo"]["reward_model"] == str(run / "reward" / "model")


def test_a_recipe_may_set_an_input_and_optional_inputs_stay_unset(tmp_path: Path) -> None:
    options = wired(
        tmp_path, ["sft_data", "sft", "ppo"], sft={"model": "runs/smollm2"}, ppo={"reward": "poem"}
    )
    assert options["sft"]["model"] == "runs/smollm2"
    assert options["ppo"]["model"] == str(tmp_path / "run" / "sft" / "model")
    assert options["ppo"]["reward_model"] is None  # no reward stage: PPO trains on its verifiable reward
    options = wired(tmp_path, ["sft_data", "sft", "preference_data", "reward", "ppo"], sft={"model": "m"})
    assert options["ppo"]["reward_model"] == str(tmp_path / "run" / "reward" / "model")


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            ["preference_data", "dpo"],
            "stage dpo needs its model (a policy), but no stage before it outputs one",
        ),
        (["sft_data", "sft", "pretrain"], "stage sft needs its model (a model)"),
        (["shards", "tokenizer"], "stage shards needs its tokenizer (a tokenizer)"),
        (["tokenizer", "tokenizer"], "appear more than once"),
    ],
)
def test_a_stage_whose_input_no_earlier_stage_makes_is_refused(
    stages: list[str], message: str, recipe: Path, tmp_path: Path, capsys
) -> None:
    assert main(["pipeline", str(recipe), "--stages", json.dumps(stages)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--pretrain.train.lr", "-1"], "stage pretrain: train.lr must be positive, got -1.0"),
        (["--pretrain.train.max_time", "5q"], "stage pretrain: train.max_time must look like '110s'"),
        (["--pretrain.train.lr", "abc"], "pretrain.train.lr: expected float, got 'abc'"),
        (["--tokenizer.vocab_sise", "9"], "unrecognized arguments: --tokenizer.vocab_sise"),
    ],
)
def test_every_stage_is_checked_before_the_first_runs(
    option: list[str], message: str, recipe: Path, tmp_path: Path, capsys
) -> None:
    argv = ["pipeline", str(recipe), "--stages", "[tokenizer, shards, pretrain]", *option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_pipeline_carries_a_model_from_pretraining_through_sft_to_a_chat_transcript(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tiny = {"d_model": 32, "n_layer": 1, "n_head": 2, "d_ff": 64, "max_seq_len": 128}
    steps = {"max_steps": 3, "batch_size": 4, "eval_every": 0, "eval_batches": 1, "checkpoint_every": 0}
    recipe = {
        "out": str(tmp_path / "run"),
        "data": str(corpus),
        "stages": ["tokenizer", "shards", "pretrain", "sft_data", "sft", "chat"],
        "tokenizer": {"vocab_size": 300},
        "shards": {"val_fraction": 0.2},
        "pretrain": {"context": 64, "model": tiny, "train": steps, "sample_tokens": 4},
        "sft_data": {"task": "arithmetic", "limit": 40},
        "sft": {"context": 128, "train": steps},
        "chat": {"say": ["What is 2 plus 3?", "And 4 plus 4?"], "sampling": {"max_new_tokens": 6}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["pipeline", str(path)]) == 0
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    chat = report[report.index("## chat") :]
    assert chat.count("**User:**") == 2 and chat.count("**Assistant:**") == 2
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert state["stages"]["chat"]["options"]["model"] == str(tmp_path / "run" / "sft" / "model")
    # The recipe's sampling fields, over the stage's greedy default.
    sampling = state["stages"]["chat"]["options"]["sampling"]
    assert (sampling["max_new_tokens"], sampling["temperature"]) == (6, 0.0)


def test_a_bad_recipe_value_is_refused_from_python(tmp_path: Path) -> None:
    from tinylm import run_pipeline

    with pytest.raises(
        TinyLMError, match=r"^invalid recipe: pretrain\.train\.lr: expected float, got 'abc'$"
    ):
        run_pipeline(out=str(tmp_path / "run"), pretrain={"train": {"lr": "abc"}})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_recipes_wire_and_check(path: Path, tmp_path: Path) -> None:
    """A pipeline recipe wires and every stage's options check; a recipe without stages holds the options of
    one `tinylm pretrain` run (its header says so), and they check too."""
    fields = read_yaml(path)
    if "stages" not in fields:
        bind_command("pretrain", {"shards": "shards", "out": str(tmp_path / "run"), **fields})
        return
    recipe = resolve_recipe({**fields, "out": str(tmp_path / "run")})
    for name, options in stage_options(recipe, tmp_path / "run").items():
        bind_command(STAGES[name].command, options)
