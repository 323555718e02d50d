"""The training loop every stage reuses.

A stage (pretraining, SFT, reward modelling, DPO, PPO...) describes its work as an `Objective`: how to make
the micro-batch with a given index, how to turn a batch into a loss, optionally how to evaluate, and any
state of its own that a resume must restore (PPO's adaptive KL coefficient, the current RL rollout). `train()`
owns everything else, once: device and process group, AdamW with decay / no-decay groups, the learning-rate
schedule, gradient accumulation, clipping, autocast, the non-finite guard, periodic evaluation, checkpoints
and resume, SIGINT / SIGTERM, metrics JSONL, the progress bar.

One optimizer step, on each of `world_size` processes:

    for each of grad_accum micro-batches:  loss = objective.loss(model, objective.batch(index)); backward
    average gradients over processes (DDP / FSDP) → clip → skip if not finite → AdamW step with lr(step)

Micro-batch indices are global: step s uses indices s·M … s·M + M − 1 with M = grad_accum × world_size, and
process r takes its `grad_accum` consecutive ones. Because a batch depends only on its index, a run with 2
processes sees exactly the batches a single process with twice the accumulation sees, and resuming needs
nothing but the step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import to_plain
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import Dist, all_reduce_mean, backbones, barrier, broadcast, init_distributed, wrap_model

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, float]]


def count_tokens(batch: Any) -> int:
    """Tokens in a batch, for tokens/s: the size of its first tensor (or of `input_ids` in a dict)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel()
    if isinstance(batch, dict):
        return count_tokens(batch.get("input_ids", next(iter(batch.values()))))
    return count_tokens(batch[0])


class Stateful(Protocol):
    """State an objective keeps beyond the model and optimizer, saved in every checkpoint (per process)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Objective:
    """What a stage supplies to the loop.

    batch: micro-batch index -> batch (tensors on CPU; the loop moves tensors, tuples and dicts of them to
        the device). Must be a pure function of the index (and of `state`): that is what makes resume and
        DDP exact.
    loss: (model, batch) -> scalar loss, or (loss, {name: float}) to log extra per-step metrics (averaged
        over the step's micro-batches). `model` is the wrapped module (DDP / compiled); just call it.
    evaluate: model -> {name: float}, run under no_grad in eval mode on every process. A "val_loss" entry
        decides which checkpoint is the best.
    flops_per_token: model FLOPs of one training token (forward + backward), for MFU; None: no MFU.
    tokens: tokens in a batch, for tokens/s.
    state: anything else a resumed run needs back (`state_dict()` / `load_state_dict()`), saved per process.
    """

    batch: Callable[[int], Any]
    loss: Callable[[nn.Module, Any], LossOutput]
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    flops_per_token: float | None = None
    tokens: Callable[[Any], int] = count_tokens
    state: Stateful | None = None


@dataclass
class TrainResult:
    """How a call to `train()` ended."""

    step: int
    """Optimizer steps done in total (including those before a resume)."""
    losses: list[float]
    """Training loss of each step this call ran."""
    skipped: int
    """Steps skipped by the non-finite guard, in total."""
    elapsed: float
    """Training wall time in seconds (optimizer steps only, not evaluation or saving), in total."""
    interrupted: bool
    """Stopped by SIGINT / SIGTERM (a checkpoint was saved)."""
    eval_metrics: dict[str, float] = field(default_factory=dict)
    """The last evaluation."""
    dist: Dist = field(default_factory=Dist)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, so model init and anything random in a stage is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(config: TrainConfig, step: int, progress: float) -> float:
    """Learning rate of `step`: linear warmup over warmup_steps, then the schedule over `progress` ∈ [0, 1].

    `progress` is step / max_steps, or elapsed / max_time for a run budgeted by time only.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    floor = config.lr * config.min_lr_ratio
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "wsd":
        decay_start = 1.0 - config.decay_fraction
        if progress < decay_start:
            return config.lr
        return config.lr + (floor - config.lr) * min(1.0, (progress - decay_start) / config.decay_fraction)
    if config.max_steps:  # cosine from the end of warmup, in steps
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: nn.Module, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear weights, embeddings) and none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, **kind)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block of every backbone in `model` during backward instead of storing its activations
    (a reward model's or a policy-with-value's body included)."""
    from torch.utils.checkpoint import checkpoint

    blocks = [block for backbone in backbones(model) for block in backbone.blocks]
    if not blocks:
        raise TinyLMError("train.activation_checkpointing needs a model with blocks (a tinylm backbone)")
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


@functools.cache
def measure_matmul_flops(
    device_type: str = "cpu", dtype: torch.dtype = torch.float32, seconds: float = 0.5
) -> float:
    """Peak FLOP/s of this process on a 2048×2048 matmul loop: the denominator of MFU.

    Measured rather than looked up, because what a shared CPU delivers depends on its threads and load. The
    operands are constant, so measuring draws nothing from the RNG a resumed run has just restored.
    """
    a = torch.full((2048, 2048), 0.5, device=device_type, dtype=dtype)
    b = torch.full((2048, 2048), 0.25, device=device_type, dtype=dtype)
    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    a @ b  # warm-up: thread pool and caches
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    sync()
    return 2 * 2048**3 * n / (time.perf_counter() - start)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class _StopSignal:
    """Turn SIGINT / SIGTERM into a flag checked between steps, so a run stops with a checkpoint.

    A second signal while stopping restores the default behaviour (a second Ctrl-C kills at once).
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        with contextlib.suppress(ValueError):  # signal handlers can only be set from the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Metrics:
    """Per-step records to <out>/metrics.jsonl (and TensorBoard), written by rank 0 only."""

    def __init__(self, out_dir: Path, resume_step: int, tensorboard: bool) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        if self.path.exists():  # drop records a crashed run wrote after its last checkpoint
            kept = [
                line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise TinyLMError(
                    "train.tensorboard needs the tensorboard package: pip install tensorboard"
                ) from e
            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def train(
    model: nn.Module,
    objective: Objective,
    config: TrainConfig,
    out_dir: str | Path,
    run_config: dict[str, Any] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train `model` on `objective` until max_steps, max_time or a stop signal; resume if `out_dir` has checkpoints.

    `run_config` (the stage's resolved config, default just `config`) is stored in every checkpoint; resuming
    with a different one raises TinyLMError naming the field. Checkpoints go to <out_dir>/checkpoints, metrics
    to <out_dir>/metrics.jsonl. Under torchrun this joins the process group and wraps the model; the process
    group stays up until the process exits (see `distributed`).
    """
    out_dir = Path(out_dir)
    run_config = to_plain(run_config if run_config is not None else {"train": config})
    d, device = init_distributed(config.resolve_device())
    dtype = config.resolve_dtype(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model.to(device)
    if config.activation_checkpointing:
        enable_activation_checkpointing(model)
    wrapped = wrap_model(model, d, config.fsdp)
    step_model = torch.compile(wrapped) if config.compile else wrapped
    optimizer = build_optimizer(model, config, fused=not config.fsdp and device.type in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    # Fresh runs start from the same RNG state on every attempt; resumed runs get theirs back from the checkpoint.
    seed_everything(config.seed + d.rank)
    ckpt_root = out_dir / "checkpoints"
    step, elapsed, skipped, best, eval_metrics = 0, 0.0, 0, None, {}
    last = broadcast(latest_checkpoint(ckpt_root), d)
    if last is not None:
        info = load_checkpoint(last, model, optimizer, scaler, run_config, d, objective.state)
        step, elapsed, skipped, best = info["step"], info["elapsed"], info["skipped"], info["best"]
        eval_metrics = info["metrics"]

    max_steps, max_seconds = config.max_steps, config.max_seconds
    n_micro = config.grad_accum * d.world_size
    peak = measure_matmul_flops(device.type, dtype) * d.world_size if objective.flops_per_token else None
    params = [p for p in model.parameters() if p.requires_grad]
    metrics = _Metrics(out_dir, step, config.tensorboard) if d.is_main else None
    bar = tqdm(
        total=max_steps, initial=step, desc=desc, disable=not d.is_main, dynamic_ncols=True, mininterval=1
    )
    losses: list[float] = []

    def checkpoint() -> None:
        info = {
            "elapsed": elapsed,
            "skipped": skipped,
            "best": best,
            "metrics": eval_metrics,
            "config": run_config,
        }
        save_checkpoint(ckpt_root, step, model, optimizer, scaler, info, d, config.keep_last, objective.state)

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad(), autocast:
            result = objective.evaluate(model)
        model.train()
        return {k: float(v) for k, v in result.items()}

    def budget_left() -> bool:
        return (max_steps is None or step < max_steps) and (max_seconds is None or elapsed < max_seconds)

    model.train()
    interrupted = False
    with _StopSignal() as stop:
        while budget_left() and not interrupted:
            lr = lr_at(config, step, step / max_steps if max_steps else elapsed / max_seconds)
            for group in optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            loss_sum, extras, tokens = torch.zeros((), device=device), {}, 0
            for i in range(config.grad_accum):
                batch = objective.batch(step * n_micro + d.rank * config.grad_accum + i)
                tokens += objective.tokens(batch)
                sync = i == config.grad_accum - 1 or not hasattr(wrapped, "no_sync")
                with contextlib.nullcontext() if sync else wrapped.no_sync(), autocast:
                    out = objective.loss(step_model, to_device(batch, device))
                loss, logs = out if isinstance(out, tuple) else (out, {})
                scaled = loss / config.grad_accum
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += loss.detach()
                for k, v in logs.items():
                    extras[k] = extras.get(k, 0.0) + float(v) / config.grad_accum
            loss_value = all_reduce_mean(loss_sum / config.grad_accum, d).item()
            if scaler:
                scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            if not (math.isfinite(loss_value) and math.isfinite(norm)):
                skipped += 1  # one bad batch (or an fp16 overflow) must not poison the weights
            elif scaler:
                scaler.step(optimizer)
            else:
                optimizer.step()
            if scaler:
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_time = time.perf_counter() - start
            step += 1
            losses.append(loss_value)
            # Processes agree on elapsed time and on a stop request, so they all stop after the same step.
            shared = torch.tensor([elapsed + step_time, float(stop.received)], dtype=torch.float64)
            elapsed, stop_requested = all_reduce_mean(shared.to(device), d).tolist()
            interrupted = stop_requested > 0

            tokens_per_s = tokens * d.world_size / step_time
            record = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": norm,
                "tokens_per_s": tokens_per_s,
            }
            if peak:
                record["mfu"] = objective.flops_per_token * tokens_per_s / peak
            record.update(extras, skipped=skipped, elapsed=elapsed)
            if metrics:
                metrics.write(record)
                bar.update(1)
                if step % max(1, config.log_every) == 0 or step == 1:
                    recent = losses[-max(1, config.log_every) :]
                    post = {"loss": f"{sum(recent) / len(recent):.3f}", "tok/s": f"{tokens_per_s:,.0f}"}
                    if peak:
                        post["mfu"] = f"{record['mfu']:.0%}"
                    if skipped:
                        post["skipped"] = skipped
                    if max_steps is None and max_seconds:  # a time budget: the bar has no step total
                        post["budget"] = (
                            f"{tqdm.format_interval(elapsed)}/{tqdm.format_interval(max_seconds)}"
                        )
                    bar.set_postfix(post, refresh=False)

            done = interrupted or not budget_left()
            saved = False
            if objective.evaluate and ((config.eval_every and step % config.eval_every == 0) or done):
                eval_metrics = evaluate()
                if metrics:
                    metrics.write({"step": step, **{f"eval/{k}": v for k, v in eval_metrics.items()}})
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                val = eval_metrics.get("val_loss")
                if val is not None and math.isfinite(val) and (best is None or val < best["val_loss"]):
                    best = {"step": step, "val_loss": val}
                    checkpoint()
                    saved = True
            if not saved and ((config.checkpoint_every and step % config.checkpoint_every == 0) or done):
                checkpoint()
    bar.close()
    if metrics:
        metrics.close()
    barrier(d)
    if interrupted and d.is_main:
        print(f"{desc}: stopped by a signal at step {step}; checkpoint saved in {ckpt_root}, rerun to resume")
    return TrainResult(step, losses, skipped, elapsed, interrupted, eval_metrics, d, device)
