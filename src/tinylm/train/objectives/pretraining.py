"""What `tinylm pretrain --objective` trains: each objective turns the token shards into the loop's
`Objective` and says how the final model is scored on the validation split.

| objective | families | learns to | final score |
|---|---|---|---|
| clm | llama | predict every next token | bits per byte |
| prefix | llama | continue after a random split point, reading the prefix both ways (UniLM) | bits per byte |
| mlm | bert | recover 15 % of the tokens, hidden (BERT's 80 / 10 / 10) | masked-token loss and accuracy |
| mlm-wwm | bert | the same with whole words hidden together (jieba's words for Chinese) | the same |
| span | t5 | write the spans dropped from its input, each after its sentinel (T5) | span loss |

A family names its default (`Family.objective`); a new objective is one module with a factory
`(config, data) -> Pretraining` and one line in `OBJECTIVES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.shards import TokenShards
from ...errors import TinyLMError
from ...eval.bpb import shards_bpb
from ...models import ModelConfig
from ...models.registry import get_family
from ...tokenizer import Tokenizer
from ..loop import Objective

OBJECTIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    # objective: (factory "module:function", the families it can train)
    "clm": ("tinylm.train.objectives.lm:causal_pretraining", ("llama",)),
    "prefix": ("tinylm.train.objectives.prefix:prefix_pretraining", ("llama",)),
    "mlm": ("tinylm.train.objectives.mlm:mlm_pretraining", ("bert",)),
    "mlm-wwm": ("tinylm.train.objectives.mlm:whole_word_mlm_pretraining", ("bert",)),
    "span": ("tinylm.train.objectives.span:span_pretraining", ("t5",)),
}


@dataclass(frozen=True)
class PretrainData:
    """The token shards as a pretraining objective sees them."""

    shards: TokenShards
    train: np.ndarray
    val: np.ndarray | None
    """None when the validation split is too short for one window: then nothing is evaluated."""
    context: int
    batch_size: int
    eval_batches: int
    seed: int
    tokenizer: Tokenizer
    device: torch.device

    def evaluation(
        self, windows: Callable[..., Any], loss: Callable[[nn.Module, Any], torch.Tensor]
    ) -> Callable[[nn.Module], dict[str, float]] | None:
        """The mean `loss` over `eval_batches` fixed batches of `windows(val, context, batch_size, seed)`."""
        if self.val is None or not self.eval_batches:
            return None
        held_out = windows(self.val, self.context, self.batch_size, seed=self.seed + 1)
        return window_loss(held_out.batch, loss, self.eval_batches, self.device)

    def split_bpb(self, model: nn.Module) -> dict[str, float]:
        """Bits per byte over the whole validation split, read causally."""
        return shards_bpb(model, self.shards, "val", self.context, self.batch_size, self.device)


def window_loss(
    batch: Callable[[int], tuple[torch.Tensor, ...]],
    loss: Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor],
    n_batches: int,
    device: torch.device,
) -> Callable[[nn.Module], dict[str, float]]:
    """An evaluation: the mean `loss` ("val_loss") over the first `n_batches` of held-out `batch(i)`
    (windows of a validation split), the same batches every time."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        batches = (tuple(t.to(device) for t in batch(i)) for i in range(n_batches))
        return {"val_loss": float(torch.stack([loss(model, b) for b in batches]).mean())}

    return evaluate


@dataclass
class Pretraining:
    """An objective ready for the loop."""

    config: ModelConfig
    """The model to build, as the objective needs it (a prefix LM sets `prefix_lm`)."""
    objective: Objective
    final: Callable[[nn.Module], dict[str, float]]
    """Scores of the final model on the whole validation split (reported with a "val_" prefix)."""
    generates: bool = True
    """Whether the model continues text (so the run ends with a sample)."""
    tokenizer: Tokenizer | None = None
    """The tokenizer the model is saved with when the objective adds tokens (span corruption's
    sentinels); None: the shards' own."""


def objective_for(name: str | None, config: ModelConfig) -> str:
    """`name` checked against the model's family, or the family's own objective when None."""
    name = name or get_family(config.family).objective
    if name not in OBJECTIVES:
        raise TinyLMError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    families = OBJECTIVES[name][1]
    if config.family not in families:
        fits = [o for o, (_, f) in OBJECTIVES.items() if config.family in f]
        raise TinyLMError(
            f"objective {name!r} does not fit model.family={config.family!r}; "
            f"it trains {', '.join(families)}; for {config.family} choose {', '.join(fits)}"
        )
    return name


def pretraining(name: str, config: ModelConfig, data: PretrainData) -> Pretraining:
    """The objective `name` (checked by `objective_for`) for a model of `config`, on `data`."""
    module, function = OBJECTIVES[objective_for(name, config)][0].split(":")
    return getattr(importlib.import_module(module), function)(config, data)
