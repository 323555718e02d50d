"""Running the same training code on one process or many (`torchrun --nproc_per_node N`).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; when they are present we join a process group (NCCL on
GPUs, gloo on CPU) and wrap the model in DDP, or shard it with FSDP2 (`fully_shard`) for models that do
not fit one device. Without them everything here is a no-op, so the loop has a single code path. Only rank
0 writes logs and checkpoints.

A process joins the group once and leaves it when it exits: several stages in one job (a pipeline under
torchrun, a Python script) share it, since a group destroyed and created again reads its peers' stale
addresses from torchrun's store.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..models.base import Backbone


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one; return our place in it and our device.

    On CUDA each process takes the GPU of its local rank.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(), device
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    return d, device


def _leave() -> None:
    """Destroy the process group at exit, then free the objects that still hold it. A reference cycle (the
    traceback of a failed run keeps its FSDP-sharded model in one) would otherwise free gloo's threads
    during interpreter shutdown, which aborts the process instead of letting it exit with its error."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def backbones(model: nn.Module) -> list[Backbone]:
    """Every backbone inside `model` (the model itself, a reward model's body, a policy's trunk)."""
    return [m for m in model.modules() if isinstance(m, Backbone)]


def wrap_model(model: nn.Module, d: Dist, fsdp: bool) -> nn.Module:
    """DDP (replicated weights, all-reduced gradients) or FSDP2 (each backbone's blocks sharded, then the root).

    Returns the module to call in the training step; the original `model` keeps the plain parameter names
    used by checkpoints. FSDP2 shards `model`'s parameters in place, so after training a sharded model is
    read through `full_model_state` (see `tinylm.train.stage`).
    """
    if not d.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for backbone in backbones(model):
            for block in backbone.blocks:
                fully_shard(block)
        return fully_shard(model)
    device_ids = [model_device(model)] if model_device(model).type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def all_reduce_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean of a tensor over all processes (the tensor itself on a single process)."""
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)  # gloo has no AVG
        value /= d.world_size
    return value


def all_gather(obj: object, d: Dist) -> list[object]:
    """Every process's `obj` (a list of one on a single process)."""
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: object, d: Dist) -> object:
    """Rank 0's `obj` on every process."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2 has sharded `model`'s parameters (they are DTensors then)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())
