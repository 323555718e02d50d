"""The shared building blocks against plain reference computations: attention in all three patterns (causal,
bidirectional with padding, cross) with grouped-query heads, its masks, and the linear-layer swap."""

from __future__ import annotations

import math

import torch
from torch import nn

from tinylm.models.components.attention import Attention, causal_mask, padding_mask
from tinylm.models.components.linear import LinearLike, block_linears, convert_linears


def reference_attention(
    attn: Attention, x: torch.Tensor, source: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """softmax(q·kᵀ/√d + mask)·v written out, each key/value head repeated for its query heads."""
    B, T, _ = x.shape
    S, d = source.shape[1], attn.head_dim
    q = attn.q_proj(x).view(B, T, attn.n_head, d).transpose(1, 2)
    k = attn.k_proj(source).view(B, S, attn.n_kv_head, d).transpose(1, 2)
    v = attn.v_proj(source).view(B, S, attn.n_kv_head, d).transpose(1, 2)
    group = attn.n_head // attn.n_kv_head
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, -1))


def make(d_context=None) -> Attention:
    torch.manual_seed(0)
    return Attention(d_model=24, n_head=6, n_kv_head=2, bias=True, d_context=d_context).eval()


def test_bidirectional_attention_with_padding_matches_the_reference():
    attn, x = make(), torch.randn(2, 5, 24)
    keys = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = padding_mask(keys)
    with torch.no_grad():
        got = attn(x, mask, causal=False)
        torch.testing.assert_close(
            got, reference_attention(attn, x, x, mask.expand(2, 1, 5, 5)), atol=1e-5, rtol=0
        )
        # Changing a padded token changes no real position's output.
        y = x.clone()
        y[1, 4] += 10
        torch.testing.assert_close(attn(y, mask, causal=False)[1, :3], got[1, :3], atol=1e-5, rtol=0)


def test_cross_attention_reads_another_sequence_of_another_width():
    attn, x, memory = make(d_context=16), torch.randn(2, 4, 24), torch.randn(2, 7, 16)
    keys = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    mask = padding_mask(keys)
    with torch.no_grad():
        got = attn(x, mask, causal=False, context=memory)
        expected = reference_attention(attn, x, memory, mask.expand(2, 1, 4, 7))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_causal_attention_and_its_mask():
    attn, x = make(), torch.randn(1, 6, 24)
    allowed = causal_mask(None, 0, 6)
    assert torch.equal(allowed[0, 0], torch.ones(6, 6, dtype=torch.bool).tril())
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference_attention(attn, x, x, allowed), atol=1e-5, rtol=0)
    # Left padding: a padding query still sees itself (no empty row), real queries never see padding.
    padded = causal_mask(torch.tensor([[0, 0, 1, 1]]), 0, 4)[0, 0]
    assert padded.diagonal().all() and not padded[2:, :2].any()


def test_convert_linears_swaps_block_layers_only_and_counts_a_wrapped_layer_once():
    class Wrapped(LinearLike):
        def __init__(self, inner: nn.Linear) -> None:
            super().__init__()
            self.inner = inner

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))])
            self.lm_head = nn.Linear(2, 3)

    model = Model()
    first = convert_linears(model, lambda name, layer: Wrapped(layer) if name.endswith(".0") else None)
    assert first == ["blocks.0.0"] and isinstance(model.blocks[0][0], Wrapped)
    assert list(block_linears(model)) == ["blocks.0.0", "blocks.0.2"]  # the wrapper, not its inner Linear
    assert isinstance(model.lm_head, nn.Linear)
