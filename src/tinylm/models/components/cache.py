"""The KV cache: keys and values of every layer for the positions seen so far, for a batch that changes.

Rows share one time axis and are right-aligned: each row's tokens end at the current length and padding
sits on the left, masked out. Rows can join (`merge`, after their own prefill) and leave (`keep`) between
decode steps, which is what continuous batching needs; a fixed batch simply never calls them. `truncate`
takes back the newest positions (speculative decoding's rejected draft tokens). The model derives positions
from the mask, so how much padding a row has never changes its result.

Layout: all layers in one tensor (n_layer, batch, n_kv_head, capacity, head_dim), so joining and leaving are
one copy each. A forward pass calls `extend_mask` (the new positions' padding), then each attention layer
`update`, then `advance`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys, values and padding mask of a set of sequences; grows as needed."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, length: int) -> None:
        self.keys, self.values, self.mask, self.length = keys, values, mask, length

    @classmethod
    def empty(
        cls,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        # Zeros, not empty: padding slots are masked, but garbage NaNs there would still leak through 0 * NaN.
        keys = torch.zeros((n_layer, batch_size, n_kv_head, capacity, head_dim), dtype=dtype, device=device)
        mask = torch.zeros(batch_size, capacity, dtype=torch.bool, device=device)
        return cls(keys, torch.zeros_like(keys), mask, 0)

    def _like(self, batch_size: int, capacity: int) -> KVCache:
        L, _, H, _, D = self.keys.shape
        return KVCache.empty(L, batch_size, H, D, capacity, self.keys.dtype, self.keys.device)

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    # What a forward pass calls.
    def extend_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Record which of the next T positions are real tokens; return the mask over all positions."""
        end = self.length + new_mask.shape[1]
        self.reserve(end)
        self.mask[:, self.length : end] = new_mask.bool()
        return self.mask[:, :end]

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for one layer; return that layer's keys/values so far."""
        end = self.length + k.shape[2]
        self.keys[layer_idx, :, :, self.length : end] = k
        self.values[layer_idx, :, :, self.length : end] = v
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    # What the engine calls between steps.
    def reserve(self, capacity: int) -> None:
        """Make room for at least `capacity` positions, growing by half at least (so copies stay rare)."""
        if capacity > self.capacity:
            rows = torch.arange(self.batch_size, device=self.mask.device)
            self._relayout(rows, 0, max(capacity, self.capacity * 3 // 2))

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (draft tokens that speculative decoding rejected)."""
        self.mask[:, length : self.length] = False
        self.length = min(self.length, length)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order, repeats allowed), and drop leading all-padding columns."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        used = self.mask[idx, : self.length].any(0).nonzero()
        start = int(used[0]) if len(used) else self.length
        self._relayout(idx, start, self.capacity - start)

    def _relayout(self, idx: torch.Tensor, start: int, capacity: int) -> None:
        n = self.length - start
        new = self._like(len(idx), capacity)
        new.keys[:, :, :, :n] = self.keys[:, idx, :, start : self.length]
        new.values[:, :, :, :n] = self.values[:, idx, :, start : self.length]
        new.mask[:, :n] = self.mask[idx, start : self.length]
        self.keys, self.values, self.mask, self.length = new.keys, new.values, new.mask, n

    def merge(self, other: KVCache, capacity: int) -> None:
        """Append the rows of `other` after ours, right-aligning both at the longer length."""
        n = max(self.length, other.length)
        new = self._like(self.batch_size + other.batch_size, max(capacity, n))
        for src, rows in ((self, slice(0, self.batch_size)), (other, slice(self.batch_size, None))):
            pad = n - src.length
            new.keys[:, rows, :, pad:n] = src.keys[:, :, :, : src.length]
            new.values[:, rows, :, pad:n] = src.values[:, :, :, : src.length]
            new.mask[rows, pad:n] = src.mask[:, : src.length]
        self.keys, self.values, self.mask, self.length = new.keys, new.values, new.mask, n
