"""The main job: stages run in order, finished stages are skipped, different runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tinylm.cli import main

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
    with pytest.raises(SystemExit) as exit_info:
        main(["pipeline", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code != 0


def test_pipeline_python_api(recipe: Path, tmp_path: Path) -> None:
    from tinylm import run_pipeline

    run = run_pipeline(recipe, stages=["tokenizer"])
    assert (run / "tokenizer" / "tokenizer_config.json").is_file()
    assert json.loads((run / "pipeline.json").read_text())["stages"].keys() == {"tokenizer"}


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
