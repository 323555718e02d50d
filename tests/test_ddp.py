"""Two CPU processes (gloo) train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tinylm.errors import TinyLMError
from tinylm.train.checkpointing import latest_checkpoint
from tinylm.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_process_group(rank: int, world_size: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)


def _worker(rank: int, world_size: int, port: int, out: str, fsdp: bool, tiny) -> None:
    _join_process_group(rank, world_size, port)
    train(tiny.model(), tiny.objective(), tiny.config(max_steps=6, fsdp=fsdp), out)


def _lora_worker(rank: int, world_size: int, port: int, out: str, change_base: bool, tiny) -> None:
    """Train LoRA under FSDP; on a TinyLMError, write its message to OUT/error-rank{rank}.txt."""
    _join_process_group(rank, world_size, port)
    model = tiny.model(lora=True)
    if change_base:
        with torch.no_grad():
            model.blocks[0].mlp.up_proj.weight[0, 0] += 1e-3
    try:
        train(model, tiny.objective(), tiny.config(max_steps=4, checkpoint_every=2, fsdp=True), out)
    except TinyLMError as e:
        (Path(out) / f"error-rank{rank}.txt").write_text(str(e))


def _losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one(tmp_path, fsdp, tiny):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), fsdp, tiny), nprocs=2, join=True)
    single_model = tiny.model()
    single = train(single_model, tiny.objective(), tiny.config(max_steps=6, grad_accum=2), tmp_path / "one")

    assert _losses(tmp_path / "two") == pytest.approx(single.losses, rel=1e-5)
    # Rank 0 alone wrote the checkpoint, holding the full (unsharded) weights.
    state = torch.load(latest_checkpoint(tmp_path / "two" / "checkpoints") / "state.pt", weights_only=True)
    for name, p in single_model.state_dict().items():
        torch.testing.assert_close(state["model"][name], p, rtol=1e-4, atol=1e-6)


def test_fsdp_resume_onto_a_changed_frozen_base_fails_on_every_rank(tmp_path, tiny):
    """Only rank 0 holds the gathered weights the check compares; the other rank must fail too, not hang."""
    mp.spawn(_lora_worker, args=(2, _free_port(), str(tmp_path), False, tiny), nprocs=2, join=True)
    context = mp.spawn(_lora_worker, args=(2, _free_port(), str(tmp_path), True, tiny), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a rank hung after the frozen-base check failed")
    for rank in (0, 1):
        assert (
            "frozen weight blocks.0.mlp.up_proj.weight differs"
            in (tmp_path / f"error-rank{rank}.txt").read_text()
        )
