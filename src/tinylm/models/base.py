"""What every model family is to the rest of tinylm: a `Backbone`, a `Cache`, and a `Family` entry.

The engine, the training loop, fine-tuning modes, adapters, quantisation, heads and checkpoints see a model
only through this interface, so a new architecture is a folder that implements it (see `registry`):

- `embed` (token ids -> vectors; the table a tied LM head shares), `blocks` (the repeated layers: the units
  of FSDP sharding, activation checkpointing, partial fine-tuning, int4 and LoRA), `norm` (the final norm),
  `lm_head`;
- `hidden(input_ids, attention_mask, position_ids, cache, prefix)` -> final hidden states (heads read
  them); `prefix` gives a prefix LM its bidirectional prefix lengths;
- `forward(..., keep)` -> logits, at every position or only the kept ones;
- `new_cache(batch_size, capacity)` -> a `Cache` for incremental decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from .config import ModelConfig


class Cache(Protocol):
    """What the engine needs of a family's decoding state, whatever it holds (keys and values, SSM states)."""

    length: int

    @property
    def batch_size(self) -> int: ...

    def reserve(self, capacity: int) -> None:
        """Room for at least `capacity` positions."""

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order (repeats allowed)."""

    def merge(self, other: Cache, capacity: int) -> None:
        """Append `other`'s rows after ours."""

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on."""


class Backbone(nn.Module):
    """A language model of some family (see the module docstring for the contract)."""

    config: ModelConfig
    embed: nn.Embedding
    blocks: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Linear
    chunked_prefill: bool = False
    """Whether a prompt may be read over the cache in several passes, giving what one pass gives (a causal
    decoder; not a prefix LM, whose prompt is one bidirectional prefix, nor an encoder-decoder)."""

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, d_model). `attention_mask` (B, T) is 1 for real tokens and 0 for padding;
        with a cache, `input_ids` are the next T tokens after the cached ones. `prefix` (B,) is, for a
        prefix LM (`config.prefix_lm`), how many leading positions are read bidirectionally."""
        raise NotImplementedError

    def new_cache(self, batch_size: int, capacity: int | None = None) -> Cache:
        """An empty cache for `batch_size` sequences, with room for `capacity` positions to start with."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        keep: int | torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        **inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Next-token logits (B, T, vocab); `keep` = k gives only the last k positions (B, k, vocab), and a
        boolean (B, T) mask gives the selected positions (N, vocab), so the head runs only where it is read.
        `inputs` are a family's own (an encoder-decoder's `decoder_input_ids`), passed on to `hidden`."""
        h = self.hidden(input_ids, attention_mask, position_ids, cache, prefix, **inputs)
        return self.lm_head(kept(h, keep))

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (shared tensors once); non_embedding drops the token embedding table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def blank(self) -> Backbone:
        """A new model of the same family and config, freshly initialised."""
        return type(self)(self.config)


def kept(h: torch.Tensor, keep: int | torch.Tensor | None) -> torch.Tensor:
    """The positions of `h` (B, T, ...) that `forward`'s `keep` selects."""
    if isinstance(keep, torch.Tensor):
        return h[keep]
    return h[:, -keep:] if keep else h


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of a model, split the way scaling-law FLOPs estimates need them."""

    embedding: int
    """The input token embedding table."""
    lm_head: int
    """The output projection; shared with `embedding` when the embeddings are tied."""
    blocks: int
    """Everything else: attention, MLPs and norms (the "non-embedding" parameters)."""
    tied: bool

    @property
    def total(self) -> int:
        """Distinct parameters (a tied table counted once), as `Backbone.num_params()` reports."""
        return self.embedding + self.blocks + (0 if self.tied else self.lm_head)


@dataclass(frozen=True)
class Family:
    """One architecture: how to build it, size it, and map it to and from its Hugging Face twin."""

    name: str
    model: type[Backbone]
    param_counts: Callable[[ModelConfig], ParamCounts]
    """Parameter counts from the config alone (reports size a model without building it)."""
    attention_flops: Callable[[ModelConfig, int], int]
    """Training FLOPs per token of attention's score and value products at a context length."""
    to_hf_config: Callable[[ModelConfig, torch.dtype, dict[str, int]], dict[str, Any]]
    """config.json for a checkpoint: the twin's fields plus ours under "tinylm"."""
    from_hf_config: Callable[[dict[str, Any], str], ModelConfig]
    """A ModelConfig from a transformers config.json of one of the twin's model types."""
    hf_name: Callable[[str], str]
    """transformers' name of one of our parameters."""
    hf_architecture: Callable[[ModelConfig], str]
    """The transformers class that computes what this config computes; TinyLMError naming the field if none."""
    hf_base_prefix: str = ""
    """Where the twin's bare base model sits in its names ("bert." in BertForMaskedLM). A checkpoint of the
    base model alone (a `BertModel`) names its tensors without the prefix and has no head; it loads with the
    head freshly initialised, as transformers does."""
    hf_optional: tuple[str, ...] = ()
    """Prefixes of our parameter names a transformers checkpoint may lack (a head that one of the twin's
    classes has and another has not); they stay freshly initialised, with a note."""
    hf_ignored: tuple[str, ...] = ()
    """Prefixes of transformers tensor names that we do not hold (another task's head); skipped on load."""
    generates: bool = True
    """A decoder: the engine, next-token objectives and fine-tuning stages need one."""
    objective: str = "clm"
    """The pretraining objective `tinylm pretrain` uses unless told (`tinylm.train.objectives.pretraining`)."""
