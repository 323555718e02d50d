"""Building blocks of the decoder: norms, rotary embeddings, attention, MLPs.

Each piece is a plain `nn.Module`, readable top to bottom. Attention goes through
`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel on CPU and GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama): rescale by 1/rms, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings: rotate each (even, odd) pair of q/k features by a position angle.

    Uses the "rotate half" layout of Hugging Face Llama so that imported weights need no permutation.
    `rope_scaling` extends the context: "linear" divides positions by the factor; "ntk" raises theta so
    low frequencies stretch while high frequencies stay put.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim, theta = config.head_dim, config.rope_theta
        scale = 1.0
        if config.rope_scaling:
            factor = float(config.rope_scaling["factor"])
            if config.rope_scaling["type"] == "ntk":
                theta = theta * factor ** (dim / (dim - 2))
            else:
                scale = factor
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq / scale, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape (B, T, head_dim) for integer positions of shape (B, T)."""
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (B, H, T, D) by the angles in cos/sin of shape (B, T, D)."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head causal self-attention with grouped-query key/value heads and an optional KV cache."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d, kv = config.d_model, config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(d, d, bias=config.attn_bias)
        self.k_proj = nn.Linear(d, kv, bias=config.attn_bias)
        self.v_proj = nn.Linear(d, kv, bias=config.attn_bias)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    """Gated MLP of Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nn.Module):
    """Classic GPT-2 MLP: down(gelu(up(x)))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_norm = make_norm(config)
        self.attn = Attention(config, layer_idx)
        self.post_attn_norm = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else GeluMLP(config)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.attn(self.input_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attn_norm(x))


def init_weights(module: nn.Module, config: ModelConfig) -> None:
    """GPT-2 style init: normal(0, std) weights, zero biases; residual output projections get std/sqrt(2L)
    so the residual stream's variance does not grow with depth."""
    residual_std = config.init_std / math.sqrt(2 * config.n_layer)
    for name, p in module.named_parameters():
        if p.dim() < 2:
            if name.endswith("bias"):
                nn.init.zeros_(p)
            continue
        std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else config.init_std
        nn.init.normal_(p, mean=0.0, std=std)
