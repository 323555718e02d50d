"""The bert family: encoder-only masked LMs (BERT, MiniLM and the sentence encoders built on them)."""

from ..base import Family, ParamCounts
from ..config import ModelConfig
from .hf import from_hf_config, hf_architecture, hf_name, to_hf_config
from .model import Bert


def param_counts(config: ModelConfig) -> ParamCounts:
    """Count the parameters of `Bert(config)` from its shape alone.

    `blocks` holds everything but the word table: the position and type tables, the norms, the pooler and
    the MLM head's transform and bias (its decoder is the word table, tied).
    """
    d, ff, V = config.d_model, config.d_ff, config.vocab_size
    kv = config.n_kv_head * config.head_dim
    norm = d if config.norm == "rmsnorm" else 2 * d
    attn = 2 * d * d + 2 * d * kv + (2 * d + 2 * kv if config.attn_bias else 0)
    if config.mlp == "swiglu":
        mlp = 3 * d * ff + (2 * ff + d if config.mlp_bias else 0)
    else:
        mlp = 2 * d * ff + (ff + d if config.mlp_bias else 0)
    positions = config.max_seq_len * d if config.position == "learned" else 0
    embeddings = positions + config.type_vocab_size * d + norm
    head = d * d + d + norm + V
    pooler = d * d + d if config.pooler else 0
    final = norm if config.norm_placement == "pre" else 0
    blocks = config.n_layer * (attn + mlp + 2 * norm) + embeddings + final + pooler + head
    untied = 0 if config.tie_embeddings else V * d
    return ParamCounts(embedding=V * d, lm_head=V * d, blocks=blocks + untied, tied=True)


def attention_flops(config: ModelConfig, context: int) -> int:
    """12 × n_layer × d_model × context: attention's score and value products, forward and backward (every
    query sees the whole context, as the decoder formula already assumes)."""
    return 12 * config.n_layer * config.d_model * context


FAMILY = Family(
    name="bert",
    model=Bert,
    param_counts=param_counts,
    attention_flops=attention_flops,
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    hf_name=hf_name,
    hf_architecture=hf_architecture,
    hf_base_prefix="bert.",
    hf_optional=("lm_head.", "pooler."),
    hf_ignored=("cls.seq_relationship.", "cls.predictions.decoder.bias", "bert.pooler."),
    generates=False,
    objective="mlm",
)
