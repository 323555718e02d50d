"""Feed-forward layers: the gated SwiGLU of Llama (and T5 v1.1's gated GELU), the classic GELU MLP of
GPT-2 / BERT (and T5 v1.0's ReLU one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """Gated MLP of Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.gate_up_proj: nn.Module | None = None
        """gate and up in one matmul, when quantization fused them (`tinylm.models.quant.fuse_projections`)."""

    def gate_up(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gate_up_proj is not None:
            return self.gate_up_proj(x).chunk(2, dim=-1)
        return self.gate_proj(x), self.up_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(F.silu(gate) * up)


class GeluMLP(nn.Module):
    """Classic MLP: down(gelu(up(x))), with GPT-2's tanh approximation or BERT's exact erf form."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, approximate: str = "tanh") -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate=self.approximate))


class ExactGeluMLP(GeluMLP):
    """The GELU MLP with the exact erf form (BERT's hidden_act "gelu")."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__(d_model, d_ff, bias, approximate="none")


class GatedGelu(SwiGLU):
    """Gated MLP of T5 v1.1 ("gated-gelu"): down(gelu_tanh(gate(x)) * up(x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class ReluMLP(nn.Module):
    """MLP of the original T5 ("relu"): down(relu(in(x))). Its input layer is `in_proj`, not `up_proj`,
    so that a name tells a plain T5 MLP's `wi` from a gated one's `wi_1`."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.relu(self.in_proj(x)))


MLPS: dict[str, type[nn.Module]] = {
    "swiglu": SwiGLU,
    "gelu": GeluMLP,
    "gelu_exact": ExactGeluMLP,
    "gated-gelu": GatedGelu,
    "relu": ReluMLP,
}
"""MLP kinds by the name a config gives (`ModelConfig.mlp`)."""
