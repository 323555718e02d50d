"""The llama family: decoder-only causal LMs (Llama, SmolLM2, Qwen2, and GPT-2-shaped variants)."""

from ..base import Family, ParamCounts
from ..config import ModelConfig
from .hf import from_hf_config, hf_architecture, hf_name, to_hf_config
from .model import Llama


def param_counts(config: ModelConfig) -> ParamCounts:
    """Count the parameters of `Llama(config)` from its shape alone."""
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


def attention_flops(config: ModelConfig, context: int) -> int:
    """12 × n_layer × d_model × context: causal attention's score and value products, forward and backward."""
    return 12 * config.n_layer * config.d_model * context


FAMILY = Family(
    name="llama",
    model=Llama,
    param_counts=param_counts,
    attention_flops=attention_flops,
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    hf_name=hf_name,
    hf_architecture=hf_architecture,
)
