"""Preallocated key/value cache for incremental decoding.

One tensor pair per layer of shape (batch, n_kv_head, max_len, head_dim), filled left to right, plus a
boolean padding mask over the cached positions so batches of left-padded prompts decode correctly.
"""

from __future__ import annotations

import torch

from ..errors import TinyLMError


class KVCache:
    """Keys and values of every layer for the positions seen so far.

    The model writes the new positions' mask with `extend_mask`, each attention layer stores its new keys
    and values with `update`, and the model calls `advance` once all layers have run.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len = max_len
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def extend_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Record which of the next T positions are real tokens; return the mask over all positions."""
        T = new_mask.shape[1]
        if self.length + T > self.max_len:
            raise TinyLMError(
                f"KV cache holds {self.max_len} positions; {self.length} used and {T} more requested"
            )
        self.mask[:, self.length : self.length + T] = new_mask.bool()
        return self.mask[:, : self.length + T]

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for one layer; return that layer's keys/values so far."""
        end = self.length + k.shape[2]
        self.keys[layer_idx][:, :, self.length : end] = k
        self.values[layer_idx][:, :, self.length : end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n
