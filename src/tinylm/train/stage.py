"""The life of every training stage, written once: pretrain, sft, reward, dpo, ppo and grpo all run through it.

    claim the run directory (refuse another run's, record config.yaml) → seed → the stage builds its
    `Plan` (model and objective) → the one training loop → gather the weights (FSDP-safe) → save the model
    (adapters and heads included) → the stage's final evaluation → results.json, loss.png, README.md →
    every process leaves the stage together

A stage file therefore holds only its data and its objective. Rerunning the same command resumes from the
last checkpoint; a stage that fails before its first checkpoint removes the directory it claimed, so the
corrected command is not refused as "a different run". Under torchrun every process runs the stage;
rank 0 alone writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import check_out_dir, to_plain, write_json, write_yaml
from ..models import Backbone, save_model
from ..models.lora import copy_lora_layout, lora_modules, merged_model, save_adapters
from .checkpointing import checkpoint_dirs, full_model_state
from .config import TrainConfig
from .distributed import Dist, barrier, broadcast, init_distributed, is_sharded
from .loop import Objective, TrainResult, seed_everything
from .loop import train as train_loop
from .report import describe, peak_memory_mb, plot_losses, trainable_counts, write_model_card


@dataclass
class Run:
    """A stage in progress: its name, directory, recorded config, and where it runs."""

    name: str
    out: Path
    config: dict[str, Any]
    train: TrainConfig
    dist: Dist
    device: torch.device


@dataclass
class Plan:
    """What a stage trains and how it reports, built once the run directory is claimed.

    model: the module the loop trains (a backbone, or one with heads); saved to <out>/model, with LoRA
        adapters also in <out>/adapter (PEFT's layout; the merged model only if `merge_adapters`).
    report: the stage's own evaluation of the trained model (rank 0, after saving), merged into results.json.
    card: Markdown lines for the model card: what the model started from and what it learned on.
    """

    model: nn.Module
    objective: Objective
    tokenizer: Path
    report: Callable[[nn.Module, TrainResult], dict[str, Any]] | None = None
    card: list[str] = field(default_factory=list)
    merge_adapters: bool = True


def run_stage(
    name: str,
    out: str | Path,
    config: dict[str, Any],
    train: TrainConfig,
    overwrite: bool,
    build: Callable[[Run], Plan],
) -> dict[str, Any]:
    """Run a training stage from claiming `out` to its results (see the module docstring).

    `config` is the stage's resolved options (recorded in config.yaml and every checkpoint; resuming with
    another is refused). Returns results.json's contents on rank 0 (`{"step": n}` on the others).
    """
    d, device = init_distributed(train.resolve_device())
    out, record = Path(out), to_plain(config)
    existed = out.exists()
    fresh = _claim(out, record, overwrite, d)
    try:
        seed_everything(train.seed)
        run = Run(name, out, record, train, d, device)
        plan = build(run)
        loaded_mb = peak_memory_mb(device)
        counts = trainable_counts(plan.model)
        shape = describe(plan.model)
        if d.is_main:
            share = counts["trainable_params"] / max(1, counts["total_params"])
            trainable = f"{counts['trainable_params']:,} of {counts['total_params']:,} parameters trainable"
            print(f"{name}: {shape}; {trainable} ({share:.2%})")
        result = train_loop(plan.model, plan.objective, train, out, record, desc=name)
        if result.interrupted:  # the checkpoint is saved; the CLI reports the interruption (exit 130)
            raise KeyboardInterrupt
        peak_mb = peak_memory_mb(device)
        final = _trained_copy(plan.model, d, device)
    except BaseException:
        if fresh and d.is_main and not checkpoint_dirs(out / "checkpoints"):
            _release(out, existed)
        raise
    results: dict[str, Any] = {"step": result.step}
    if d.is_main:
        final.eval()
        _save(final, out, plan)
        results = {
            "stage": name,
            "step": result.step,
            "train_seconds": result.elapsed,
            "skipped_steps": result.skipped,
            "final_train_loss": _mean(result.losses[-20:]),
            **counts,
            "peak_memory_mb": peak_mb,
            "peak_memory_before_training_mb": loaded_mb,
            "peak_memory_kind": "CUDA allocated" if device.type == "cuda" else "process resident set",
            **{f"last_eval_{k}": v for k, v in result.eval_metrics.items()},
        }
        if plan.report is not None:
            with torch.no_grad():
                results.update(plan.report(final, result))
        write_json(out / "results.json", results)
        plot_losses(out / "metrics.jsonl", out / "loss.png", f"{name} loss")
        write_model_card(out, name, plan.card, results, shape)
    barrier(d)  # every process leaves the stage together
    return results


def recorded(arguments: dict[str, Any], **resolved: Any) -> dict[str, Any]:
    """A stage's options as config.yaml records them: its arguments (all but `out` and `overwrite`), with
    what the stage resolved (defaults filled in, files found) in place of what was given."""
    return {k: v for k, v in {**arguments, **resolved}.items() if k not in ("out", "overwrite")}


def _claim(out: Path, record: dict[str, Any], overwrite: bool, d: Dist) -> bool:
    """Rank 0 refuses a directory holding another run (or clears it with `overwrite`) and records config.yaml;
    the others wait. True when `out` did not already hold this run."""
    fresh = True
    if d.is_main:
        fresh = not check_out_dir(out, record, overwrite)
        write_yaml(out / "config.yaml", record)
    fresh = broadcast(fresh, d)
    barrier(d)
    return fresh


def _release(out: Path, existed: bool) -> None:
    """Undo a claim that came to nothing: remove what the failed stage wrote."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _trained_copy(model: nn.Module, d: Dist, device: torch.device) -> nn.Module | None:
    """The trained model as a plain module on rank 0 (None on the others).

    FSDP2 shards the module's parameters in place; its full weights are gathered (every process takes part)
    into a fresh copy of the same structure. Otherwise the module itself is the trained model.
    """
    if not is_sharded(model):
        return model if d.is_main else None
    weights = full_model_state(model)
    if not d.is_main:
        return None
    copy = model.blank()
    copy_lora_layout(_body(model), _body(copy))
    copy.load_state_dict(weights)
    return copy.to(device)


def _body(model: nn.Module) -> Backbone:
    return model if isinstance(model, Backbone) else model.body


def _save(model: nn.Module, out: Path, plan: Plan) -> None:
    """<out>/model (and <out>/adapter for LoRA), atomically, with the tokenizer files."""
    if lora_modules(model):
        save_adapters(model, out / "adapter")
        if plan.merge_adapters:
            save_model(merged_model(model), out / "model", plan.tokenizer)
    else:
        save_model(model, out / "model", plan.tokenizer)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
