"""The shared training loop on a tiny model and random tokens: schedule, learning, guard, budgets, metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.train import Objective, TrainConfig, train
from tinylm.train.config import parse_duration
from tinylm.train.loop import lr_at

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedules(tiny):
    c = tiny.config(max_steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(c, 0, 0.0) == pytest.approx(0.1) and lr_at(c, 9, 0.09) == pytest.approx(1.0)
    assert lr_at(c, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(c, 55, 0.55) == pytest.approx(0.55)  # halfway through the cosine
    assert lr_at(c, 100, 1.0) == pytest.approx(0.1)
    w = tiny.config(
        max_steps=100, warmup_steps=0, lr=1.0, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2
    )
    assert lr_at(w, 50, 0.5) == 1.0 and lr_at(w, 80, 0.8) == 1.0
    assert lr_at(w, 90, 0.9) == pytest.approx(0.5) and lr_at(w, 100, 1.0) == pytest.approx(0.0)


def test_durations_and_validation():
    assert parse_duration("110s") == 110 and parse_duration("5m") == 300 and parse_duration(90) == 90
    assert parse_duration("1.5h") == 5400 and parse_duration("45") == 45
    with pytest.raises(TinyLMError, match="max_time"):
        TrainConfig(max_time="soon")
    with pytest.raises(TinyLMError, match="budget"):
        TrainConfig(max_steps=None)
    with pytest.raises(TinyLMError, match="train.batch_size"):
        TrainConfig(batch_size=0)


def test_loss_falls_and_metrics_are_logged(tmp_path, tiny):
    def loss_with_extra(model, batch):
        loss = tiny.loss(model, batch)
        return loss, {"ppl": math.exp(loss.item())}

    def evaluate(model):
        return {"val_loss": tiny.loss(model, tiny.batch(10**6)).item()}

    result = train(
        tiny.model(),
        Objective(tiny.batch, loss_with_extra, evaluate, flops_per_token=1000.0),
        tiny.config(max_steps=60, eval_every=30),
        tmp_path,
    )
    assert result.step == 60 and result.skipped == 0 and not result.interrupted
    assert sum(result.losses[-5:]) / 5 < 0.5 * math.log(tiny.vocab)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 61))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "ppl", "elapsed"):
        assert key in steps[0], key
    evals = [r for r in records if "eval/val_loss" in r]
    assert [r["step"] for r in evals] == [30, 60]
    assert result.eval_metrics["val_loss"] == evals[-1]["eval/val_loss"]


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_nonfinite_step_is_skipped_and_counted(tmp_path, where, tiny):
    """A step whose loss or gradient is NaN changes nothing: 4 steps with a bad last one = 3 clean steps."""

    def indexed(index):
        return (*tiny.batch(index), index)

    def poisoned(model, batch):
        x, y, index = batch
        logits = model(x)
        if index == 3 and where == "grad":
            logits.register_hook(lambda g: g * float("nan"))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        return loss * float("nan") if index == 3 and where == "loss" else loss

    steady = dict(schedule="constant", warmup_steps=0)
    bad_model, clean_model = tiny.model(), tiny.model()
    result = train(
        bad_model, Objective(indexed, poisoned), tiny.config(max_steps=4, **steady), tmp_path / "bad"
    )
    train(clean_model, tiny.objective(), tiny.config(max_steps=3, **steady), tmp_path / "clean")
    assert result.skipped == 1
    assert (where == "loss") == math.isnan(result.losses[3])
    for p, q in zip(bad_model.parameters(), clean_model.parameters(), strict=True):
        assert torch.equal(p, q)
    last = json.loads((tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == 1 and last["step"] == 4


def test_gradient_accumulation_matches_a_big_batch(tmp_path, tiny):
    """2 micro-batches of 4 = 1 batch of 8 holding the same sequences (up to float summation order)."""

    def pair(index):  # micro-batch i of step s is half of the 8-sequence batch of step s
        x, y = tiny.batch(index // 2, batch_size=8)
        half = slice(0, 4) if index % 2 == 0 else slice(4, 8)
        return x[half], y[half]

    accum, big = tiny.model(), tiny.model()
    a = train(accum, Objective(pair, tiny.loss), tiny.config(max_steps=5, grad_accum=2), tmp_path / "a")
    b = train(
        big,
        Objective(lambda i: tiny.batch(i, 8), tiny.loss),
        tiny.config(max_steps=5, batch_size=8),
        tmp_path / "b",
    )
    assert a.losses == pytest.approx(b.losses, rel=1e-5)


def test_time_budget_without_steps(tmp_path, tiny, capsys):
    result = train(tiny.model(), tiny.objective(), tiny.config(max_steps=None, max_time="0.3s"), tmp_path)
    assert result.elapsed >= 0.3 and result.step >= 1
    assert result.step == len(result.losses)
    assert "budget=00:00/00:00" in capsys.readouterr().err  # the bar shows time used of the budget


def test_activation_checkpointing_gives_the_same_losses(tmp_path, tiny):
    plain = train(tiny.model(), tiny.objective(), tiny.config(max_steps=3), tmp_path / "plain")
    ckpt = train(
        tiny.model(),
        tiny.objective(),
        tiny.config(max_steps=3, activation_checkpointing=True),
        tmp_path / "ac",
    )
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-6)
