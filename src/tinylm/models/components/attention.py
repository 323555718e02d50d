"""Multi-head attention with grouped-query key/value heads, and the boolean masks that steer it.

One module serves every family: causal self-attention (GPT, Llama), bidirectional self-attention (BERT,
an encoder), and cross-attention to another sequence (an encoder-decoder's decoder), with optional rotary
positions and KV cache. It goes through `scaled_dot_product_attention`, which picks a fused kernel on CPU
and GPU. Masks are boolean, True where a query may attend to a key, shaped (B, 1, T, S).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .rope import apply_rotary

_STEPWISE: ContextVar[bool] = ContextVar("stepwise_attention", default=False)


@contextmanager
def stepwise_attention() -> Iterator[None]:
    """Within it, cached self-attention computes each of the T new queries as a one-token decode step would:
    the same kernel call on the keys up to its own position (so for causal masks only, not a prefix LM's
    prompt). SDPA rounds differently with the number of queries and keys, so without this the logits of T
    tokens read in one pass differ in the last bits from those of T one-token steps, enough to flip greedy
    argmaxes at near-ties; with it they are bitwise equal where the matmuls are (int4). Speculative
    decoding's verification uses it: its greedy output must be plain decoding's."""
    token = _STEPWISE.set(True)
    try:
        yield
    finally:
        _STEPWISE.reset(token)


class Attention(nn.Module):
    """Attention from `x` (B, T, d_model) to itself, or to `context` (B, S, d_context) for cross-attention.

    `rotary` is (cos, sin) for self-attention with rotary positions; a `cache` stores this layer's keys and
    values (`layer_idx`) so later calls attend to every position seen so far.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        n_kv_head: int | None = None,
        bias: bool = False,
        out_bias: bool = False,
        dropout: float = 0.0,
        layer_idx: int = 0,
        d_context: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        self.head_dim, self.layer_idx, self.dropout = d_model // n_head, layer_idx, dropout
        self.scale = scale  # of the scores; None is 1/sqrt(head_dim), T5 uses 1
        kv, source = self.n_kv_head * self.head_dim, d_context or d_model
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(source, kv, bias=bias)
        self.v_proj = nn.Linear(source, kv, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=out_bias)
        self.qkv_proj: nn.Module | None = None
        """q, k and v in one matmul, when quantization fused them (`tinylm.models.quant.fuse_projections`)."""

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], n, self.head_dim).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, n_kv_head, S, head_dim) of `source`: what cross-attention computes once and caches."""
        return self._heads(self.k_proj(source), self.n_kv_head), self._heads(
            self.v_proj(source), self.n_kv_head
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = True,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
        context: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`mask` (B, 1, T, S) overrides `causal`; without a mask, `causal` picks a causal or full pattern.
        A float `mask` is added to the scores (T5's position bias, with -inf where a key is hidden); `kv`
        are keys and values computed before (`keys_values`), for cross-attention to a cached context."""
        if self.qkv_proj is not None and context is None and kv is None:
            q, k, v = self._fused_qkv(x, rotary)
        else:
            q = self._heads(self.q_proj(x), self.n_head)
            k, v = kv if kv is not None else self.keys_values(x if context is None else context)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        if self.cached_kernel(q.shape[2], q, mask, cache, context, causal):
            scale = self.scale if self.scale is not None else self.head_dim**-0.5
            y = torch.ops.tinylm.cached_attention(q, k, v, mask, scale)
        elif _STEPWISE.get() and cache is not None and mask is not None and context is None:
            y = self._stepwise(q, k, v, mask)
        else:
            y = self._attend(q, k, v, mask, causal and mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))

    CACHED_QUERIES = 16
    """Most new queries that go to tinylm's cached-attention op (decoding, speculative verification)."""

    def cached_kernel(self, new: int, x: torch.Tensor, mask, cache, context, causal: bool) -> bool:
        """Whether tinylm's cached-attention op computes a call with `new` queries (`x` is any fp32 tensor of
        the call): a few new queries to a cache, at inference, with a boolean or causal mask. It computes
        each query on its own, as stepwise does."""
        return (
            cache is not None
            and context is None
            and new <= self.CACHED_QUERIES
            and self.head_dim % 16 == 0
            and (mask.dtype == torch.bool if mask is not None else causal)
            and not (self.training and self.dropout)
            and kernels.inference(x)
        )

    def _stepwise(self, q, k, v, mask) -> torch.Tensor:
        """Each of the T new queries over the keys up to its own position, in a call of its own."""
        past = k.shape[2] - q.shape[2]
        rows = []
        for i in range(q.shape[2]):
            end = past + i + 1
            rows.append(
                self._attend(
                    q[:, :, i : i + 1], k[:, :, :end], v[:, :, :end], mask[..., i : i + 1, :end], False
                )
            )
        return torch.cat(rows, 2)

    def _attend(self, q, k, v, mask, is_causal: bool) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
            enable_gqa=self.n_kv_head != self.n_head,
        )

    def _fused_qkv(self, x: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v from the fused projection; q and k rotate together, in one pass."""
        y = self.qkv_proj(x).view(x.shape[0], x.shape[1], -1, self.head_dim)  # (B, T, heads, D)
        rotated = self.n_head + self.n_kv_head
        qk, v = y[:, :, :rotated], y[:, :, rotated:]
        if rotary is not None and kernels.inference(y):  # y is this call's own: rotate it in place, in one op
            torch.ops.tinylm.rope_(y, *rotary, rotated)
        elif rotary is not None:
            qk = apply_rotary(qk, *rotary, head_axis=2)
        q, k = qk[:, :, : self.n_head], qk[:, :, self.n_head :]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def causal_mask(
    key_padding: torch.Tensor | None, past: int, T: int, prefix: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 1, T, past+T): query i (at position past+i) sees earlier keys that are not padding.

    `key_padding` (B, past+T) is 1 for real tokens. `prefix` (B,) makes it a prefix LM's mask: every query
    also sees the first prefix[b] key slots, so the prefix is read bidirectionally and the rest causally
    (UniLM); prefix 0 is the causal mask. Each query may always see itself, so a padding query's row is
    never empty (which would give NaN).
    """
    device = key_padding.device if key_padding is not None else None
    q = torch.arange(T, device=device).unsqueeze(1) + past
    k = torch.arange(past + T, device=device).unsqueeze(0)
    allowed = (k <= q)[None, None]
    if prefix is not None:
        allowed = allowed | (k < prefix.to(k.device)[:, None, None])[:, None]
    if key_padding is not None:
        allowed = allowed & key_padding.bool()[:, None, None, :]
    return allowed | (k == q)[None, None]


def padding_mask(key_padding: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, S) for bidirectional or cross-attention: every query sees every real key."""
    return key_padding.bool()[:, None, None, :]
