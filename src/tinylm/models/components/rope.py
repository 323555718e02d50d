"""Rotary position embeddings (RoPE), in the "rotate half" layout of Hugging Face Llama."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotate each pair of q/k features by a position-dependent angle.

    The layout is Hugging Face Llama's (the two halves of a head form the pairs), so imported weights need
    no permutation. `scaling` extends the context: "linear" divides positions by the factor; "ntk" raises
    theta so low frequencies stretch while high frequencies stay put.
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict | None = None) -> None:
        super().__init__()
        scale = 1.0
        if scaling:
            factor = float(scaling["factor"])
            if scaling["type"] == "ntk":
                theta = theta * factor ** (head_dim / (head_dim - 2))
            else:
                scale = factor
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq / scale, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape (B, T, head_dim) for integer positions of shape (B, T)."""
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_axis: int = 1) -> torch.Tensor:
    """Rotate x of shape (B, H, T, D) (or (B, T, H, D) with head_axis=2) by cos/sin of shape (B, T, D)."""
    cos, sin = cos.unsqueeze(head_axis).to(x.dtype), sin.unsqueeze(head_axis).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
