"""The t5 family: encoder-decoder LMs (T5 v1.0 with ReLU and a tied head, T5 v1.1 with gated GELU)."""

from ..base import Family, ParamCounts
from ..config import ModelConfig
from .hf import from_hf_config, hf_architecture, hf_name, to_hf_config
from .model import T5


def param_counts(config: ModelConfig) -> ParamCounts:
    """Count the parameters of `T5(config)` from its shape alone."""
    d, ff, kv = config.d_model, config.d_ff, config.n_kv_head * config.head_dim
    attn = 2 * d * d + 2 * d * kv + d
    mlp = (3 if config.mlp in ("swiglu", "gated-gelu") else 2) * d * ff + d
    bias = config.relative_buckets * config.n_head
    encoder = config.n_layer * (attn + mlp) + bias + d
    decoder = config.n_decoder_layer * (2 * attn + mlp) + bias + d
    table = config.vocab_size * d
    return ParamCounts(embedding=table, lm_head=table, blocks=encoder + decoder, tied=config.tie_embeddings)


def attention_flops(config: ModelConfig, context: int) -> int:
    """Encoder and decoder self-attention and cross-attention at `context` positions each: 12·d·context
    per layer for the encoder's full attention counted as the decoder's causal one, doubled for the
    decoder's two attentions (an estimate: BENCHMARKS.md's convention for decoders)."""
    return 12 * (config.n_layer + 2 * config.n_decoder_layer) * config.d_model * context


FAMILY = Family(
    name="t5",
    model=T5,
    param_counts=param_counts,
    attention_flops=attention_flops,
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    hf_name=hf_name,
    hf_architecture=hf_architecture,
    objective="span",
)
