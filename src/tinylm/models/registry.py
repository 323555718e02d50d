"""The model families tinylm knows, and `build_model`, the one way to make a model from a config.

A family is a folder under `tinylm.models` whose `__init__` defines `FAMILY` (a `base.Family`). Adding one
is that folder plus one line here: its module and the transformers `model_type`s it imports. Families are
imported on first use, so naming one costs nothing until it is built.
"""

from __future__ import annotations

import importlib

from ..errors import TinyLMError
from .base import Backbone, Family, ParamCounts
from .config import ModelConfig

FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    # family: (module defining FAMILY, transformers model_types whose checkpoints it loads)
    "llama": ("tinylm.models.llama", ("llama", "qwen2")),
    "bert": ("tinylm.models.bert", ("bert",)),
    "t5": ("tinylm.models.t5", ("t5",)),
}

ENCODER_COMMANDS = (
    "tinylm info, tinylm export hf, tinylm pretrain --objective mlm, tinylm embed "
    "(mean-pooled sentence embeddings)"
)
"""What an encoder-only model is good for, named when it is given to a command that generates."""


def get_family(name: str) -> Family:
    """The family registered as `name`."""
    if name not in FAMILIES:
        raise TinyLMError(f"unknown model family {name!r}; known families: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name][0]).FAMILY


def family_of_hf(model_type: str | None, source: str) -> Family:
    """The family that loads transformers checkpoints of `model_type`."""
    for name, (_, model_types) in FAMILIES.items():
        if model_type in model_types:
            return get_family(name)
    known = sorted(t for _, types in FAMILIES.values() for t in types)
    raise TinyLMError(f"{source}: model_type {model_type!r} is not supported; expected one of {known}")


def require_generative(config: ModelConfig, command: str) -> None:
    """TinyLMError unless `config`'s family can predict the next token (generate, chat, SFT, RL ...)."""
    if not get_family(config.family).generates:
        raise TinyLMError(
            f"{command} needs a decoder or encoder-decoder family; this model is a {config.family} encoder "
            f"(bidirectional, it cannot predict the next token). Commands that fit it: {ENCODER_COMMANDS}"
        )


def build_model(config: ModelConfig) -> Backbone:
    """A freshly initialised model of `config.family` (seed torch first for a reproducible init)."""
    return get_family(config.family).model(config)


def param_counts(config: ModelConfig) -> ParamCounts:
    """Parameter counts of `build_model(config)`, from the config alone."""
    return get_family(config.family).param_counts(config)


def model_flops_per_token(config: ModelConfig, context: int) -> int:
    """Training FLOPs per token: 6 × (non-embedding + LM-head parameters) + attention's products (BENCHMARKS.md).

    The first term is the forward (2) and backward (4) matmul cost of every weight a token passes through;
    the embedding lookup is free but the LM head is a full matmul, so it counts even when tied. The second
    grows with the context (for a decoder 12 × n_layer × d_model × context).
    """
    p = param_counts(config)
    return 6 * (p.blocks + p.lm_head) + get_family(config.family).attention_flops(config, context)
