"""`tinylm pretrain` end to end through the CLI on the tiny shards, and the bad inputs it must refuse."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tinylm.cli import main
from tinylm.data.bpe import train_tokenizer
from tinylm.models import load_model
from tinylm.train.report import summarize_run as summarize

TINY_MODEL = [
    "--model.d_model",
    "32",
    "--model.n_layer",
    "1",
    "--model.n_head",
    "2",
    "--model.max_seq_len",
    "32",
]
QUICK = ["--train.max_steps", "8", "--train.batch_size", "4", "--train.warmup_steps", "2"]
QUICK += ["--train.eval_every", "4", "--train.eval_batches", "2", "--train.device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain_args(shards, out, *extra: str) -> list[str]:
    return ["pretrain", "--shards", str(shards), "--out", str(out), *TINY_MODEL, *QUICK, *extra]


def test_tiny_pretrain_end_to_end(tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(pretrain_args(tiny_shards_dir, out, "--sample_tokens", "12", "--sample_prompt", "ROMEO:")) == 0
    )
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "results.json", "README.md"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["step"] == 8 and results["skipped_steps"] == 0
    assert 0 < results["val_bpb"] < 20 and math.isfinite(results["val_bpb"])
    assert results["sample"].startswith("ROMEO:")
    assert "bits per byte" in (out / "README.md").read_text()
    assert f"{results['val_bpb']:.4f} bits per byte" in summarize(out)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model = load_model(out / "model")
    assert model.config.vocab_size == 1024 and model.config.d_model == 32

    # The same number from `tinylm eval bpb` on the saved checkpoint.
    capsys.readouterr()
    assert main(["eval", "bpb", "--model", str(out / "model"), "--data", str(tiny_shards_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"{results['val_bpb']:.4f}" in printed

    # Rerunning the same command finds the finished run and does not train again.
    metrics_before = (out / "metrics.jsonl").read_text()
    assert (
        main(pretrain_args(tiny_shards_dir, out, "--sample_tokens", "12", "--sample_prompt", "ROMEO:")) == 0
    )
    assert (out / "metrics.jsonl").read_text() == metrics_before


def test_shards_of_another_tokenizer_are_refused(tiny_corpus_dir, tiny_shards_dir, tmp_path, capsys):
    other = tmp_path / "other_tokenizer"
    train_tokenizer(str(tiny_corpus_dir), str(other), vocab_size=512)
    code = main(pretrain_args(tiny_shards_dir, tmp_path / "run", "--tokenizer", str(other)))
    assert code == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_context_longer_than_the_model_is_refused(tiny_shards_dir, tmp_path, capsys):
    assert main(pretrain_args(tiny_shards_dir, tmp_path / "run", "--context", "64")) == 2
    err = capsys.readouterr().err
    assert "context 64 is longer than the model supports (model.max_seq_len=32)" in err


def test_rerun_with_another_config_is_refused(tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_shards_dir, out, "--train.max_steps", "2", "--sample_tokens", "0")) == 0
    code = main(
        pretrain_args(
            tiny_shards_dir, out, "--train.max_steps", "2", "--sample_tokens", "0", "--train.lr", "0.01"
        )
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "train.lr (was 0.001, now 0.01)" in err


def test_eval_bpb_scores_a_corpus_and_checks_context(tiny_shards_dir, tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_shards_dir, out, "--train.max_steps", "2", "--sample_tokens", "0")) == 0
    capsys.readouterr()
    assert (
        main(["eval", "bpb", "--model", str(out / "model"), "--data", str(tiny_corpus_dir / "plays.txt")])
        == 0
    )
    assert "val bits per byte" in capsys.readouterr().out
    assert (
        main(
            ["eval", "bpb", "--model", str(out / "model"), "--data", str(tiny_shards_dir), "--context", "33"]
        )
        == 2
    )
    assert "longer than the model supports" in capsys.readouterr().err


def test_an_explicit_value_equal_to_a_default_overrides_the_preset(tiny_shards_dir, tmp_path):
    """Preset 10m has 6 layers; 4 (the default without a preset) given on the command line must win."""
    args = [
        "pretrain",
        "--shards",
        str(tiny_shards_dir),
        "--out",
        str(tmp_path / "run"),
        "--model.preset",
        "10m",
    ]
    args += ["--model.n_layer", "4", "--context", "8", "--train.max_steps", "1", "--train.batch_size", "1"]
    assert (
        main([*args, "--train.warmup_steps", "0", "--sample_tokens", "0", "--train.eval_batches", "0"]) == 0
    )
    config = load_model(tmp_path / "run" / "model").config
    assert (config.n_layer, config.d_model, config.d_ff) == (4, 384, 1024)


def metric(run, key: str) -> list:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def run_cli(*args: str) -> None:
    """`tinylm ARGS` in a fresh process, as a user runs it (nothing cached from an earlier run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tinylm.cli", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_resume_with_dropout_is_bit_exact_across_processes(tiny_shards_dir, tmp_path):
    """A run that loses its last checkpoint and is rerun in a new process continues the dropout masks and
    ends on the very same weights (measuring the FLOP peak used to draw from the restored RNG)."""
    args = pretrain_args(tiny_shards_dir, tmp_path / "run", "--model.dropout", "0.1", "--sample_tokens", "0")
    args = [*args[1:], "--train.checkpoint_every", "4", "--train.keep_last", "3"]
    run_cli("pretrain", *args)
    straight = load_model(tmp_path / "run" / "model").state_dict()
    losses = metric(tmp_path / "run", "loss")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000008")
    shutil.rmtree(tmp_path / "run" / "model")
    run_cli("pretrain", *args)  # resumes from step 4
    assert metric(tmp_path / "run", "loss") == losses and len(losses) == 8
    resumed = load_model(tmp_path / "run" / "model").state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
