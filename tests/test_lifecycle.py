"""Every training stage under torchrun with 2 gloo processes, DDP and FSDP2: it trains, saves a model that
loads, and a rerun after losing its last checkpoint resumes to the very same model and losses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinylm.models import load_model
from tinylm.train.checkpointing import checkpoint_dirs

HERE = Path(__file__).parent
STAGES = ("pretrain", "sft", "lora", "reward", "dpo", "ppo", "grpo", "distill")


@pytest.fixture(scope="module")
def inputs(tiny_shards_dir, tiny_policy, tiny_tasks, tmp_path_factory) -> Path:
    """The directory the torchrun script reads: shards, a tiny policy, and the task directories."""
    root = tmp_path_factory.mktemp("lifecycle")
    shutil.copytree(tiny_shards_dir, root / "shards")
    shutil.copytree(tiny_policy, root / "policy")
    for name in ("sft", "prefs", "arith"):
        shutil.copytree(tiny_tasks / name, root / name)
    return root


def torchrun(inputs: Path, out: Path, mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(HERE / "torchrun_stages.py"), str(inputs), str(out), mode]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def losses(run: Path) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_every_stage_trains_saves_and_resumes_under_torchrun(inputs, tmp_path, mode):
    torchrun(inputs, tmp_path, mode)
    first = {}
    for stage in STAGES:
        run = tmp_path / stage
        results = json.loads((run / "results.json").read_text())
        assert results["step"] == 4 and results["skipped_steps"] == 0, stage
        first[stage] = (losses(run), load_model(run / "model").state_dict())
        assert len(first[stage][0]) == 4
        # Lose the last checkpoint and everything written after training: the rerun resumes from step 3
        # (inside an RL round of 2 steps, from the rollout kept in the checkpoint).
        shutil.rmtree(checkpoint_dirs(run / "checkpoints")[-1])
        for name in ("model", "adapter", "results.json", "README.md"):
            path = run / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    torchrun(inputs, tmp_path, mode)
    for stage in STAGES:
        run = tmp_path / stage
        assert json.loads((run / "results.json").read_text())["step"] == 4
        assert losses(run) == first[stage][0], stage
        resumed = load_model(run / "model").state_dict()
        for name, tensor in first[stage][1].items():
            assert torch.equal(resumed[name], tensor), f"{stage}: {name}"
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "ppo" / "model" / "value_head.safetensors").is_file()
    assert (tmp_path / "reward" / "model" / "reward_head.safetensors").is_file()
