"""Checkpoints and resume: bitwise continuation, interrupted saves, config mismatches, pruning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.train import Objective
from tinylm.train.checkpointing import checkpoint_dirs, latest_checkpoint
from tinylm.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def interrupt_at(index: int, tiny):
    """A batch function that sends this process SIGINT while fetching micro-batch `index`."""

    def batch(i):
        if i == index:
            signal.raise_signal(signal.SIGINT)
        return tiny.batch(i)

    return batch


def test_20_steps_equal_10_plus_signal_plus_resume(tmp_path, tiny):
    """Dropout is on, so the RNG state must be restored too; the signal path saves the checkpoint."""
    straight_model = tiny.model(dropout=0.1)
    straight = train(straight_model, tiny.objective(), tiny.config(), tmp_path / "straight")

    first = train(
        tiny.model(dropout=0.1),
        Objective(interrupt_at(9, tiny), tiny.loss),
        tiny.config(),
        tmp_path / "resumed",
    )
    assert first.interrupted and first.step == 10
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed" / "checkpoints")] == ["step-00000010"]
    resumed_model = tiny.model(
        dropout=0.1, seed=99
    )  # different init: everything must come from the checkpoint
    second = train(resumed_model, tiny.objective(), tiny.config(), tmp_path / "resumed")

    assert second.step == 20 and not second.interrupted
    assert first.losses + second.losses == straight.losses  # bitwise
    for p, q in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 20


def test_resume_with_another_config_names_the_field(tmp_path, tiny):
    train(tiny.model(), tiny.objective(), tiny.config(max_steps=3), tmp_path)
    with pytest.raises(TinyLMError, match=r"train\.lr \(was 0\.003, now 0\.001\)"):
        train(tiny.model(), tiny.objective(), tiny.config(max_steps=3, lr=1e-3), tmp_path)


def test_keeps_last_k_and_best(tmp_path, tiny):
    val = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])

    def evaluate(model):
        return {"val_loss": next(val)}

    cfg = tiny.config(max_steps=12, eval_every=2, checkpoint_every=2, keep_last=2)
    train(tiny.model(), Objective(tiny.batch, tiny.loss, evaluate), cfg, tmp_path)
    kept = [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")]
    assert kept == ["step-00000004", "step-00000010", "step-00000012"]  # best (0.5 at step 4) + last 2


KILLED_SAVE = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from conftest import TinyTraining
    from tinylm.train.loop import train

    torch.set_num_threads(1)
    real_save, calls = torch.save, [0]

    def hanging_save(obj, f, *a, **kw):
        calls[0] += 1
        if calls[0] == 3:  # the third checkpoint: write half a file, then wait to be killed
            with open(f, "wb") as fh:
                fh.write(b"partial" * 1000)
                fh.flush()
            print("SAVING", flush=True)
            time.sleep(600)
        real_save(obj, f, *a, **kw)

    torch.save = hanging_save
    tiny = TinyTraining()
    train(tiny.model(), tiny.objective(), tiny.config(max_steps=6, checkpoint_every=1), {out!r})
    """
)


def test_checkpoint_survives_kill_9_during_save(tmp_path, tiny):
    out = tmp_path / "run"
    code = KILLED_SAVE.format(tests=str(ROOT / "tests"), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert proc.stdout.readline().strip() == b"SAVING"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    root = out / "checkpoints"
    assert latest_checkpoint(root).name == "step-00000002"
    assert any(p.name.startswith(".step-00000003") for p in root.iterdir())  # the half-written save

    resumed = train(tiny.model(), tiny.objective(), tiny.config(max_steps=6, checkpoint_every=1), out)
    straight = train(
        tiny.model(), tiny.objective(), tiny.config(max_steps=6, checkpoint_every=1), tmp_path / "straight"
    )
    assert resumed.losses == straight.losses[2:]
    assert not any(p.name.startswith(".") for p in root.iterdir())  # leftovers swept


def test_lora_checkpoint_holds_only_the_adapters_and_resumes_exactly(tmp_path, tiny):
    straight_model = tiny.model(lora=True)
    straight = train(straight_model, tiny.objective(), tiny.config(), tmp_path / "straight")

    first = train(
        tiny.model(lora=True),
        Objective(interrupt_at(9, tiny), tiny.loss),
        tiny.config(),
        tmp_path / "resumed",
    )
    state = torch.load(
        latest_checkpoint(tmp_path / "resumed" / "checkpoints") / "state.pt", weights_only=True
    )
    learned = {n for n, p in straight_model.named_parameters() if p.requires_grad}
    assert set(state["model"]) == learned and all(".lora_" in n for n in learned)
    assert "embed.weight" in state["frozen"] and len(state["optimizer"]["state"]) == len(learned)

    resumed_model = tiny.model(lora=True, seed=99)  # other adapters: they must come from the checkpoint
    second = train(resumed_model, tiny.objective(), tiny.config(), tmp_path / "resumed")
    assert first.losses + second.losses == straight.losses  # bitwise
    for p, q in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_onto_a_changed_frozen_base_is_refused(tmp_path, tiny):
    first = train(tiny.model(lora=True), Objective(interrupt_at(3, tiny), tiny.loss), tiny.config(), tmp_path)
    assert first.interrupted
    other = tiny.model(lora=True)
    with torch.no_grad():
        other.blocks[0].mlp.up_proj.weight[0, 0] += 1e-3
    with pytest.raises(TinyLMError, match=r"frozen weight blocks\.0\.mlp\.up_proj\.weight differs"):
        train(other, tiny.objective(), tiny.config(), tmp_path)
