"""Two CPU processes (gloo) train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_train_loop import config, lm_task, tiny_model

from tinylm.train.checkpointing import latest_checkpoint
from tinylm.train.loop import train


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded machine idle-spinning threads slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str, fsdp: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    from tinylm.train.distributed import shutdown

    result = train(tiny_model(), lm_task(), config(max_steps=6, fsdp=fsdp), out)
    shutdown(result.dist)


def _losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one(tmp_path, fsdp):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), fsdp), nprocs=2, join=True)
    single_model = tiny_model()
    single = train(single_model, lm_task(), config(max_steps=6, grad_accum=2), tmp_path / "one")

    assert _losses(tmp_path / "two") == pytest.approx(single.losses, rel=1e-5)
    # Rank 0 alone wrote the checkpoint, holding the full (unsharded) weights.
    state = torch.load(latest_checkpoint(tmp_path / "two" / "checkpoints") / "state.pt", weights_only=True)
    for name, p in single_model.state_dict().items():
        torch.testing.assert_close(state["model"][name], p, rtol=1e-4, atol=1e-6)
