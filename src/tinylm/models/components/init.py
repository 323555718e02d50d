"""Weight initialisation shared by the families."""

from __future__ import annotations

import math

from torch import nn


def init_weights(module: nn.Module, std: float, n_layer: int, residual: tuple[str, ...]) -> None:
    """GPT-2 style: normal(0, std) matrices, zero biases, norms untouched; the residual output projections
    (names ending in one of `residual`) get std/sqrt(2·n_layer), so the residual stream's variance does not
    grow with depth."""
    residual_std = std / math.sqrt(2 * n_layer)
    for name, p in module.named_parameters():
        if p.dim() < 2:
            if name.endswith("bias"):
                nn.init.zeros_(p)
            continue
        nn.init.normal_(p, mean=0.0, std=residual_std if name.endswith(residual) else std)
