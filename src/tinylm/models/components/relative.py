"""T5's relative position bias: a learned scalar per head for each bucket of key-minus-query distance.

Near distances get a bucket each, far ones share logarithmically wider buckets up to `max_distance`; the
encoder tells before from after (bidirectional), a decoder sees only the past. Only differences of
positions matter, so left padding never changes a row's result.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(
    relative: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """The bucket of each key-minus-query distance, exactly as `transformers`' T5 computes it."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -relative.clamp(max=0)
    max_exact = num_buckets // 2
    large = (
        max_exact
        + (
            torch.log(relative.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(relative < max_exact, relative, large)


class RelativePositionBias(nn.Module):
    """(1, n_head, T, S) bias for queries at positions past..past+T-1 and keys at 0..S-1."""

    def __init__(self, n_head: int, num_buckets: int, max_distance: int, bidirectional: bool) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(num_buckets, n_head))

    def forward(self, T: int, S: int, past: int = 0) -> torch.Tensor:
        device = self.weight.device
        q = torch.arange(T, device=device)[:, None] + past
        k = torch.arange(S, device=device)[None, :]
        buckets = relative_position_bucket(k - q, self.bidirectional, self.num_buckets, self.max_distance)
        return self.weight[buckets].permute(2, 0, 1).unsqueeze(0)
