"""Resumable training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory `<out>/checkpoints/step-00001000/` holding
  state.pt    the weights that learn, optimizer and grad-scaler state, RNG states of every process, and
              every process's objective state (its `state_dict()`: an RL run's rollout and KL coefficient)
              (plain tensors and numbers, read back with `torch.load(weights_only=True)`)
  state.json  step, elapsed training time, skipped steps, best evaluation, last metrics, and the run config.

It is written into a temporary directory, fsynced and renamed (`tinylm.io.atomic_dir`), so a crash or
`kill -9` in the middle of a save leaves only a hidden `.step-*.tmp` directory that is ignored and later
swept away; the previous checkpoint stays intact. The data position needs no saving: batches are a pure
function of the step. We keep the last `keep_last` checkpoints plus the best one.

Frozen parameters (LoRA's base, the lower blocks of partial or frozen fine-tuning) are not saved: a resumed
run rebuilds them from the same starting model, as its config names it, and the optimizer holds state only
for what learns. Saving the frozen base made every checkpoint of a 135M-parameter LoRA run half a gigabyte
for a few megabytes of adapters. Instead state.pt keeps a fingerprint (float64 sum and sum of squares) of
each frozen tensor, so resuming onto a different base is refused rather than silently mixed.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..errors import TinyLMError
from ..io import atomic_dir, first_difference, read_json, to_plain, write_json
from .distributed import Dist, all_gather, broadcast

_PREFIX = "step-"
# Full (unsharded) state on CPU: the same files whether the run used one process, DDP or FSDP2.
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Loading: the frozen parameters are absent from the file (checked against the fingerprints instead).
_FULL_PARTIAL = StateDictOptions(full_state_dict=True, cpu_offload=True, strict=False)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's complete weights on CPU, also when sharded by FSDP2.

    Collective in a distributed run: every process must call it, and only rank 0 gets the weights (the
    others get an empty dict), which is all the writing rank needs.
    """
    return get_model_state_dict(model, options=_FULL)


def frozen_names(model: nn.Module) -> set[str]:
    """State-dict names of the parameters that do not learn (both names of a tied tensor)."""
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """Sum and sum of squares in float64: equal for the same weights, different for any real change."""
    t = tensor.detach().double()
    return torch.stack([t.sum(), t.square().sum()])


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temporary directories of interrupted saves excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def latest_checkpoint(root: str | Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and Python RNG states, as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    info: dict[str, Any],
    d: Dist,
    keep_last: int,
    objective_state=None,
) -> Path:
    """Write the checkpoint of `step` atomically and prune old ones; collective under DDP / FSDP.

    `info` goes to state.json; its "best" entry ({"step": ..., ...} or None) names the checkpoint that
    pruning must keep besides the last `keep_last`.
    """
    frozen = frozen_names(model)
    whole = full_model_state(model)
    model_state = {k: v for k, v in whole.items() if k not in frozen}
    frozen_prints = {k: fingerprint(v) for k, v in whole.items() if k in frozen}
    optim_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
    rngs = all_gather(rng_state(), d)
    objectives = all_gather(objective_state.state_dict() if objective_state is not None else {}, d)
    path = Path(root) / f"{_PREFIX}{step:08d}"
    if d.is_main:
        state = {
            "model": model_state,
            "frozen": frozen_prints,
            "optimizer": optim_state,
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": rngs,
            "objective": objectives,
        }
        with atomic_dir(path) as tmp:
            torch.save(state, tmp / "state.pt")
            write_json(tmp / "state.json", to_plain({"step": step, **info}))
        _prune(Path(root), keep_last, (info.get("best") or {}).get("step"))
    return path


def _prune(root: Path, keep_last: int, best_step: int | None) -> None:
    """Drop all but the newest `keep_last` checkpoints and the best, and leftovers of interrupted saves."""
    dirs = checkpoint_dirs(root)
    keep = set(dirs[-keep_last:])
    if best_step is not None:
        keep.add(root / f"{_PREFIX}{best_step:08d}")
    for p in dirs:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f".{_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    run_config: dict[str, Any],
    d: Dist,
    objective_state=None,
) -> dict[str, Any]:
    """Restore model, optimizer, scaler, this process's RNG and objective state from `path`; return its
    state.json.

    Raises TinyLMError naming the first config field that differs from the one the checkpoint was made
    with, since continuing such a run would silently mix two experiments.
    """
    path = Path(path)
    info = read_json(path / "state.json")
    diff = first_difference(info.get("config"), to_plain(run_config))
    if diff:
        raise TinyLMError(
            f"cannot resume from {path}: it was made with a different config: {diff}. "
            "Use the same config, or a new output directory"
        )
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or corrupted file: say which
        raise TinyLMError(f"cannot read training checkpoint {path / 'state.pt'}: {e}") from e
    problem = broadcast(_frozen_problem(path, model, state), d)
    if problem:  # raised on every rank, or the others would wait forever in the next collective
        raise TinyLMError(problem)
    set_model_state_dict(model, state["model"], options=_FULL_PARTIAL)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=_FULL)
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    set_rng_state(rngs[d.rank] if d.rank < len(rngs) else rngs[0])
    if objective_state is not None:
        saved = state.get("objective") or [{}]
        objective_state.load_state_dict(saved[d.rank] if d.rank < len(saved) else saved[0])
    return info


def _frozen_problem(path: Path, model: nn.Module, state: dict[str, Any]) -> str | None:
    """Why the checkpoint cannot resume this model, or None: the file must hold every weight that learns,
    and the frozen ones must be those it was trained on.

    Collective under FSDP (gathers the full weights for the fingerprints); only rank 0 holds them, so only
    rank 0's verdict counts.
    """
    saved, prints = state["model"], state.get("frozen", {})
    whole = full_model_state(model)
    missing = sorted(k for k in whole if k not in saved and k not in prints)
    if missing:
        return f"training checkpoint {path / 'state.pt'} lacks {missing[0]} (and {len(missing) - 1} more)"
    for name, expected in prints.items():
        if name in whole and not torch.allclose(fingerprint(whole[name]), expected, rtol=1e-9, atol=0):
            return (
                f"cannot resume from {path}: frozen weight {name} differs from the one it was trained on "
                "(was the starting model changed?). Use the same model, or a new output directory"
            )
    return None
