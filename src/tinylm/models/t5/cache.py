"""An encoder-decoder's decoding state: the decoder's self-attention KV cache plus the encoder's keys and
values for every decoder layer's cross-attention, computed once when the prompt is encoded.

Rows join (`merge`) and leave (`keep`) together in both parts, so the engine's continuous batching works as
it does for a decoder-only model. Encoder rows of different lengths are padded on the right and masked.
"""

from __future__ import annotations

import torch

from ..components.cache import KVCache


class T5Cache:
    """`self_attn` (the one KV cache) and `keys`, `values` (n_layer, B, H, S, D), `mask` (B, S) of the encoder."""

    def __init__(self, self_attn: KVCache) -> None:
        self.self_attn = self_attn
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    @classmethod
    def empty(cls, n_layer, batch_size, n_head, head_dim, capacity, dtype, device) -> T5Cache:
        return cls(KVCache.empty(n_layer, batch_size, n_head, head_dim, capacity, dtype, device))

    @property
    def length(self) -> int:
        """Decoder positions seen so far."""
        return self.self_attn.length

    @property
    def batch_size(self) -> int:
        return self.self_attn.batch_size

    @property
    def encoded(self) -> bool:
        return self.keys is not None

    def set_encoder(self, keys_values: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """Store each decoder layer's cross-attention keys and values of the encoded prompt."""
        self.keys = torch.stack([k for k, _ in keys_values])
        self.values = torch.stack([v for _, v in keys_values])
        self.mask = mask.bool()

    def cross(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, values, mask) of the encoder for one decoder layer's cross-attention."""
        return self.keys[layer_idx], self.values[layer_idx], self.mask

    def reserve(self, capacity: int) -> None:
        self.self_attn.reserve(capacity)

    def keep(self, rows: list[int]) -> None:
        self.self_attn.keep(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.keys, self.values, self.mask = self.keys[:, idx], self.values[:, idx], self.mask[idx]

    def merge(self, other: T5Cache, capacity: int) -> None:
        self.self_attn.merge(other.self_attn, capacity)
        S = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = S - t.shape[dim]
            return torch.cat([t, t.new_zeros((*t.shape[:dim], extra, *t.shape[dim + 1 :]))], dim)

        self.keys = torch.cat([pad(self.keys, 3), pad(other.keys, 3)], 1)
        self.values = torch.cat([pad(self.values, 3), pad(other.values, 3)], 1)
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)], 0)
