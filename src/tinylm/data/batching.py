"""Batches of examples of similar length, epoch after epoch, as a pure function of the batch index.

Sorting by length puts little compute into padding; being a function of (seed, index) lets a resumed or
distributed run find its batches from the step alone, as the training loop requires.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..errors import TinyLMError


def length_batches(lengths: list[int], batch_size: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """Index batches of similar lengths for one epoch.

    Indices are shuffled, cut into pools of 50 batches, sorted by length within each pool and cut into
    batches; the batch order is shuffled again. The result is a pure function of (seed, epoch).
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = 50 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class LengthBatches:
    """Micro-batch `index` of an endless sequence of epochs: `make(indices)` of one length batch."""

    def __init__(
        self, lengths: list[int], batch_size: int, seed: int, make: Callable[[list[int]], Any]
    ) -> None:
        if not lengths:
            raise TinyLMError("no training examples are left after fitting them to the context")
        self.lengths, self.batch_size, self.seed, self.make = lengths, batch_size, seed, make
        self.per_epoch = len(self._epoch(0))

    def _epoch(self, epoch: int) -> list[list[int]]:
        if getattr(self, "_cached", (None,))[0] != epoch:
            self._cached = (epoch, length_batches(self.lengths, self.batch_size, self.seed, epoch))
        return self._cached[1]

    def __call__(self, index: int) -> Any:
        epoch, i = divmod(index, self.per_epoch)
        return self.make(self._epoch(epoch)[i])
