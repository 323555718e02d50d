"""How to train: the optimizer, schedule, budget, precision and bookkeeping knobs of the training loop.

One dataclass shared by every stage, so `--train.lr 3e-4` means the same thing in pretraining, SFT and
DPO. Values that depend on the machine (device, precision) default to "auto" and are resolved at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import TinyLMError

_TIME_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds from "110s", "5m", "1.5h", "90" or a number; None stays None (no time limit)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", value)
    if not match:
        raise TinyLMError(
            f"train.max_time must look like '110s', '5m', '1h' or a number of seconds, got {value!r}"
        )
    return float(match.group(1)) * _TIME_UNITS[match.group(2) or ""]


@dataclass
class TrainConfig:
    """Hyperparameters and bookkeeping of the shared training loop.

    One optimizer step consumes `batch_size × grad_accum × world_size` sequences: each process runs
    `grad_accum` micro-batches of `batch_size` before the gradients are averaged and applied.
    """

    lr: float = 1e-3
    """Peak learning rate, reached at the end of warmup."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not to norms or biases)."""
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """After warmup: cosine decay to min_lr_ratio·lr; "wsd" holds lr then decays linearly over the last decay_fraction."""
    decay_fraction: float = 0.2
    """Share of training spent decaying in the warmup-stable-decay schedule."""
    min_lr_ratio: float = 0.1
    batch_size: int = 16
    """Sequences per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    max_steps: int | None = 1000
    """Optimizer steps; also the horizon of the schedule. None: train until max_time."""
    max_time: str | float | None = None
    """Training wall-time budget ("110s", "5m", "1h" or seconds). Without max_steps the schedule follows time."""
    eval_every: int = 200
    """Evaluate every this many steps (and always at the end); 0: only at the end."""
    eval_batches: int = 20
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (and at the end); 0: only at the end."""
    keep_last: int = 2
    """Training checkpoints kept besides the best one."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision; "auto" is fp32 on CPU (bf16 matmuls are slower there) and bf16 on CUDA."""
    compile: bool = False
    """torch.compile the model (first steps are slow while it compiles)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, about 30 % more compute."""
    fsdp: bool = False
    """Under torchrun, shard parameters, gradients and optimizer state with FSDP2 instead of replicating (DDP)."""
    seed: int = 1337
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"."""
    log_every: int = 10
    """Refresh the progress bar's loss / tokens/s / MFU every this many steps (metrics JSONL gets every step)."""
    tensorboard: bool = False
    """Also write the metrics as TensorBoard events under <out>/tensorboard."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise a TinyLMError naming the first field that cannot work."""
        for name in ("lr", "batch_size", "grad_accum"):
            if getattr(self, name) <= 0:
                raise TinyLMError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in (
            "warmup_steps",
            "eval_every",
            "eval_batches",
            "checkpoint_every",
            "grad_clip",
            "log_every",
        ):
            if getattr(self, name) < 0:
                raise TinyLMError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last < 1:
            raise TinyLMError(f"train.keep_last must be >= 1, got {self.keep_last}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TinyLMError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.decay_fraction <= 1:
            raise TinyLMError(f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise TinyLMError(f"train.max_steps must be positive or null, got {self.max_steps}")
        seconds = parse_duration(self.max_time)
        if seconds is not None and seconds <= 0:
            raise TinyLMError(f"train.max_time must be positive, got {self.max_time!r}")
        if self.max_steps is None and seconds is None:
            raise TinyLMError("set train.max_steps or train.max_time (or both): training needs a budget")

    @property
    def max_seconds(self) -> float | None:
        return parse_duration(self.max_time)

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TinyLMError(f"train.device={self.device!r} but no CUDA device is available")
        return device

    def resolve_dtype(self, device: torch.device) -> torch.dtype:
        """The autocast dtype (float32 means no autocast)."""
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
