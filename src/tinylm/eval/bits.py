"""The bits-per-byte formula on its own (see `tinylm.eval.bpb`), free of torch, so n-gram models, which
never import torch, score in the same unit through the same definition."""

from __future__ import annotations

import math


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Total negative log-likelihood in nats over ln 2 times the text's UTF-8 bytes."""
    return nats / (math.log(2) * n_bytes)
