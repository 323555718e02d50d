"""The KV cache: keys and values of every layer for the positions seen so far, for a batch that changes.

Rows share one time axis and are right-aligned: each row's tokens end at the current length and padding
sits on the left, masked out. Rows can join (`merge`, after their own prefill) and leave (`keep`) between
decode steps, which is what continuous batching needs; a fixed batch simply never calls them. `truncate`
takes back the newest positions (speculative decoding's rejected draft tokens). The model derives positions
from the mask, so how much padding a row has never changes its result.

Layout: all layers in one tensor (n_layer, rows, n_kv_head, capacity, head_dim); `keys`, `values` and `mask` are
views of its first `batch_size` rows. A row that leaves is filled by the last one and the views shrink; a row that
joins goes into a spare row when its prompt fits the current length. So a large batch of short requests
(a server under load) copies one row per arrival or departure, not the whole cache; other changes relayout
into a new tensor. A forward pass calls `extend_mask` (the new positions' padding), then each attention layer
`update`, then `advance`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys, values and padding mask of a set of sequences; grows as needed."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, length: int) -> None:
        self.keys, self.values, self.mask, self.length = keys, values, mask, length
        self._store = (keys, values, mask)  # every allocated row; the views above are its first batch_size

    def _view(self, rows: int) -> None:
        keys, values, mask = self._store
        self.keys, self.values, self.mask = keys[:, :rows], values[:, :rows], mask[:rows]

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
        """Keep only these rows (in this order, repeats allowed), and drop leading all-padding columns.

        Rows that keep their place, or move into a hole from beyond the kept ones, are moved in place; leading
        padding is then dropped only once it is half the length (a copy of everything, so not at every step).
        """
        n = len(rows)
        moves = [(j, r) for j, r in enumerate(rows) if r != j]
        if len(set(rows)) == n and all(n <= r < self.batch_size for _, r in moves):
            for (
                j,
                r,
            ) in moves:  # every source lies beyond the kept rows, so none is overwritten before it is read
                self.keys[:, j], self.values[:, j], self.mask[j] = (
                    self.keys[:, r],
                    self.values[:, r],
                    self.mask[r],
                )
            self._view(n)
            if self._leading_padding() * 2 < self.length:
                return
            rows = list(range(n))
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        start = self._leading_padding(idx)
        self._relayout(idx, start, self.capacity - start)

    def _leading_padding(self, idx: torch.Tensor | None = None) -> int:
        """How many leading columns are padding in every row (of `idx`, default all)."""
        mask = self.mask[:, : self.length] if idx is None else self.mask[idx, : self.length]
        used = mask.any(0).nonzero()
        return int(used[0]) if len(used) else self.length

    def _relayout(self, idx: torch.Tensor, start: int, capacity: int) -> None:
        """Copy rows `idx`, columns from `start`, into a new store of `capacity` columns (keeping its spare rows)."""
        n = self.length - start
        new = self._like(max(len(idx), self._store[2].shape[0]), capacity)
        new.keys[:, : len(idx), :, :n] = self.keys[:, idx, :, start : self.length]
        new.values[:, : len(idx), :, :n] = self.values[:, idx, :, start : self.length]
        new.mask[: len(idx), :n] = self.mask[idx, start : self.length]
        self._store, self.length = new._store, n
        self._view(len(idx))

    def merge(self, other: KVCache, capacity: int) -> None:
        """Append the rows of `other` after ours, right-aligning both at the longer length.

        When `other` is no longer than us and the store has spare rows, they go there and nothing else moves.
        """
        b, pad = self.batch_size, self.length - other.length
        if pad >= 0 and b + other.batch_size <= self._store[2].shape[0]:
            self._view(b + other.batch_size)
            self.keys[:, b:, :, pad : self.length] = other.keys[:, :, :, : other.length]
            self.values[:, b:, :, pad : self.length] = other.values[:, :, :, : other.length]
            self.mask[b:, :pad] = False
            self.mask[b:, pad : self.length] = other.mask[:, : other.length]
            self.reserve(capacity)
            return
        n = max(self.length, other.length)
        new = self._like(self.batch_size + other.batch_size, max(capacity, n))
        for src, rows in ((self, slice(0, self.batch_size)), (other, slice(self.batch_size, None))):
            pad = n - src.length
            new.keys[:, rows, :, pad:n] = src.keys[:, :, :, : src.length]
            new.values[:, rows, :, pad:n] = src.values[:, :, :, : src.length]
            new.mask[rows, pad:n] = src.mask[:, : src.length]
        self._store, self.length = new._store, n
        self._view(new.batch_size)
