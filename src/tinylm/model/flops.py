"""Parameter counts and the FLOPs-per-token estimate used for MFU (see BENCHMARKS.md).

Both are computed from the config alone, so a report can size a model without building it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of a decoder, split the way scaling-law FLOPs estimates need them."""

    embedding: int
    """The input token embedding table."""
    lm_head: int
    """The output projection; shared with `embedding` when the embeddings are tied."""
    blocks: int
    """Everything else: attention, MLPs and norms (the "non-embedding" parameters)."""
    tied: bool

    @property
    def total(self) -> int:
        """Distinct parameters (a tied table counted once), as `TinyLM.num_params()` reports."""
        return self.embedding + self.blocks + (0 if self.tied else self.lm_head)


def param_counts(config: ModelConfig) -> ParamCounts:
    """Count parameters of `TinyLM(config)` from its shape alone."""
    d, ff, kv = config.d_model, config.d_ff, config.n_kv_head * config.head_dim
    norm = d if config.norm == "rmsnorm" else 2 * d
    attn = 2 * d * d + 2 * d * kv + (d + 2 * kv if config.attn_bias else 0)
    if config.mlp == "swiglu":
        mlp = 3 * d * ff + (2 * ff + d if config.mlp_bias else 0)
    else:
        mlp = 2 * d * ff + (ff + d if config.mlp_bias else 0)
    blocks = config.n_layer * (attn + mlp + 2 * norm) + norm
    table = config.vocab_size * d
    return ParamCounts(embedding=table, lm_head=table, blocks=blocks, tied=config.tie_embeddings)


def model_flops_per_token(config: ModelConfig, context: int) -> int:
    """Training FLOPs per token: 6 × (non-embedding + LM-head parameters) + 12 × n_layer × d_model × context.

    The first term is the forward (2) and backward (4) matmul cost of every weight a token passes
    through; the embedding lookup is free but the LM head is a full matmul, so it counts even when tied.
    The second term is attention's score and value products, which grow with the context.
    """
    p = param_counts(config)
    return 6 * (p.blocks + p.lm_head) + 12 * config.n_layer * config.d_model * context
