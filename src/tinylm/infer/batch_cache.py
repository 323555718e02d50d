"""A KV cache whose batch changes between decode steps, for continuous batching.

`tinylm.model.KVCache` serves one fixed batch. The server needs rows to join (a new request, prefilled on
its own) and leave (finished or cancelled) between steps. Rows share one time axis and are right-aligned:
each row's tokens end at the current length and padding sits on the left, masked out. The model derives
positions from the mask, so how much padding a row has never changes its result.

Layout: all layers in one tensor (n_layer, batch, n_kv_head, capacity, head_dim), so joining and leaving
are one copy each. This object speaks the same protocol the model uses with KVCache (`length`,
`extend_mask`, `update`, `advance`).
"""

from __future__ import annotations

import torch


class BatchCache:
    """Keys, values and padding mask of a changing set of sequences."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, length: int) -> None:
        self.keys, self.values, self.mask, self.length = keys, values, mask, length

    @classmethod
    def empty(cls, model: torch.nn.Module, batch_size: int, capacity: int) -> BatchCache:
        """Room for `capacity` positions of `batch_size` rows of `model` (a TinyLM)."""
        c, w = model.config, model.embed_tokens.weight
        return cls._zeros((c.n_layer, batch_size, c.n_kv_head, capacity, c.head_dim), w.dtype, w.device)

    @classmethod
    def _zeros(cls, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> BatchCache:
        # Zeros, not empty: padding slots are masked, but garbage NaNs there would still leak through 0 * NaN.
        keys = torch.zeros(shape, dtype=dtype, device=device)
        mask = torch.zeros(shape[1], shape[3], dtype=torch.bool, device=device)
        return cls(keys, torch.zeros_like(keys), mask, 0)

    def _like(self, batch_size: int, capacity: int) -> BatchCache:
        L, _, H, _, D = self.keys.shape
        return BatchCache._zeros((L, batch_size, H, capacity, D), self.keys.dtype, self.keys.device)

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    # The protocol TinyLM calls during a forward pass.
    def extend_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        self.reserve(self.length + new_mask.shape[1])
        self.mask[:, self.length : self.length + new_mask.shape[1]] = new_mask.bool()
        return self.mask[:, : self.length + new_mask.shape[1]]

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer_idx, :, :, self.length : end] = k
        self.values[layer_idx, :, :, self.length : end] = v
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    # Batch management between steps.
    def reserve(self, capacity: int) -> None:
        """Make room for at least `capacity` positions, growing by half at least (so copies stay rare)."""
        if capacity > self.capacity:
            rows = torch.arange(self.batch_size, device=self.mask.device)
            self._relayout(rows, 0, max(capacity, self.capacity * 3 // 2))

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), and drop leading columns that are now padding in every row."""
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

    def merge(self, other: BatchCache, capacity: int) -> None:
        """Append the rows of `other` after ours, right-aligning both at the longer length."""
        n = max(self.length, other.length)
        new = self._like(self.batch_size + other.batch_size, max(capacity, n))
        for src, rows in ((self, slice(0, self.batch_size)), (other, slice(self.batch_size, None))):
            pad = n - src.length
            new.keys[:, rows, :, pad:n] = src.keys[:, :, :, : src.length]
            new.values[:, rows, :, pad:n] = src.values[:, :, :, : src.length]
            new.mask[rows, pad:n] = src.mask[:, : src.length]
        self.keys, self.values, self.mask, self.length = new.keys, new.values, new.mask, n
