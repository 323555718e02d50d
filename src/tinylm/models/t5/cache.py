"""An encoder-decoder's decoding state: the decoder's self-attention KV cache plus the encoder's keys and
values for every decoder layer's cross-attention, computed once when the prompt is encoded.

Rows join (`merge`) and leave (`keep`) together in both parts, so the engine's continuous batching works as
it does for a decoder-only model. Encoder rows of different lengths are padded on the right and masked.
"""

from __future__ import annotations

import torch

from ..components.cache import KVCache


class T5Cache:
    """`self_attn` (the one KV cache); `keys`, `values` (per decoder layer, (B, H, S, D)) and `mask` (B, S)
    of the encoded prompt, filled by the decoder blocks on the first call."""

    def __init__(self, self_attn: KVCache, n_layer: int) -> None:
        self.self_attn = self_attn
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.mask: torch.Tensor | None = None

    @classmethod
    def empty(cls, n_layer, batch_size, n_head, head_dim, capacity, dtype, device) -> T5Cache:
        return cls(KVCache.empty(n_layer, batch_size, n_head, head_dim, capacity, dtype, device), n_layer)

    @property
    def length(self) -> int:
        """Decoder positions seen so far."""
        return self.self_attn.length

    @property
    def batch_size(self) -> int:
        return self.self_attn.batch_size

    @property
    def encoded(self) -> bool:
        """Whether the prompt has been encoded (the first call with this cache does it)."""
        return self.mask is not None

    def store_encoder(self, layer: int, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> None:
        """Keep one decoder layer's cross-attention keys and values of the encoded prompt."""
        self.keys[layer], self.values[layer] = kv
        self.mask = mask.bool()

    def encoder(self, layer: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """((keys, values), mask) of the encoded prompt for one decoder layer's cross-attention."""
        return (self.keys[layer], self.values[layer]), self.mask

    def reserve(self, capacity: int) -> None:
        self.self_attn.reserve(capacity)

    def truncate(self, length: int) -> None:
        self.self_attn.truncate(length)

    def keep(self, rows: list[int]) -> None:
        self.self_attn.keep(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.keys = [k[idx] for k in self.keys]
        self.values = [v[idx] for v in self.values]
        self.mask = self.mask[idx]

    def merge(self, other: T5Cache, capacity: int) -> None:
        self.self_attn.merge(other.self_attn, capacity)
        S = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = t.new_zeros((*t.shape[:dim], S - t.shape[dim], *t.shape[dim + 1 :]))
            return torch.cat([t, extra], dim)

        self.keys = [torch.cat([pad(a, 2), pad(b, 2)]) for a, b in zip(self.keys, other.keys, strict=True)]
        self.values = [
            torch.cat([pad(a, 2), pad(b, 2)]) for a, b in zip(self.values, other.values, strict=True)
        ]
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
