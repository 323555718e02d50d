"""The bert family's Hugging Face twin: `BertForMaskedLM` (and `BertModel`, its bare encoder, on import).

Names map segment by segment (`hf_name`); configs field by field. Our full config rides along in
config.json under "tinylm", so settings BERT cannot express (RoPE, SwiGLU, RMSNorm) still round-trip.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ...errors import TinyLMError
from ..config import ModelConfig

_HEAD = {
    "lm_head.transform": "cls.predictions.transform.dense",
    "lm_head.norm": "cls.predictions.transform.LayerNorm",
    "lm_head.decoder.weight": "cls.predictions.decoder.weight",
    "lm_head.decoder.bias": "cls.predictions.bias",
}
_EMBEDDINGS = {
    "embed": "word_embeddings",
    "position_embed": "position_embeddings",
    "type_embed": "token_type_embeddings",
    "embed_norm": "LayerNorm",
}
_BLOCK = {
    "attn.q_proj": "attention.self.query",
    "attn.k_proj": "attention.self.key",
    "attn.v_proj": "attention.self.value",
    "attn.o_proj": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "mlp.up_proj": "intermediate.dense",
    "mlp.down_proj": "output.dense",
    "mlp_norm": "output.LayerNorm",
}
_ACTS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}
"""transformers' hidden_act -> our mlp."""


def hf_name(name: str) -> str:
    """transformers' name for one of our parameters ("blocks.0.attn.q_proj.weight" ->
    "bert.encoder.layer.0.attention.self.query.weight")."""
    for ours, theirs in _HEAD.items():
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    module, _, param = name.rpartition(".")
    if module in _EMBEDDINGS:
        return f"bert.embeddings.{_EMBEDDINGS[module]}.{param}"
    if module == "pooler.dense":
        return f"bert.pooler.dense.{param}"
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)", module)
    if block and block[2] in _BLOCK:
        return f"bert.encoder.layer.{block[1]}.{_BLOCK[block[2]]}.{param}"
    return "bert." + name  # a module BERT does not have (rotary buffers hold no parameters)


def hf_architecture(config: ModelConfig) -> str:
    """`BertForMaskedLM` when the config is exactly BERT's; a TinyLMError naming the field otherwise."""
    exact = dict(
        position="learned",
        norm="layernorm",
        norm_placement="post",
        attn_bias=True,
        mlp_bias=True,
        tie_embeddings=True,
    )
    for field, value in exact.items():
        if getattr(config, field) != value:
            raise TinyLMError(
                f"model.{field}={getattr(config, field)} has no transformers BERT twin (it needs {value})"
            )
    if config.mlp not in ("gelu", "gelu_exact"):
        raise TinyLMError(
            f"model.mlp={config.mlp} has no transformers BERT twin (it needs gelu or gelu_exact)"
        )
    if config.n_kv_head != config.n_head:
        raise TinyLMError("model.n_kv_head < model.n_head (grouped-query attention) has no BERT twin")
    return "BertForMaskedLM"


def to_hf_config(config: ModelConfig, dtype: torch.dtype, special_ids: dict[str, int]) -> dict[str, Any]:
    """config.json contents: transformers' BertConfig fields plus our own config under "tinylm"."""
    try:
        arch = hf_architecture(config)
    except TinyLMError:
        arch = "TinyLM"
    return {
        "architectures": [arch],
        "model_type": "bert" if arch != "TinyLM" else "tinylm",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "intermediate_size": config.d_ff,
        "hidden_act": "gelu" if config.mlp == "gelu_exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "max_position_embeddings": config.max_seq_len,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.norm_eps,
        "initializer_range": config.init_std,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **special_ids,
        "tinylm": config.to_dict(),
    }


def from_hf_config(hf: dict[str, Any], source: str) -> ModelConfig:
    """A ModelConfig from a transformers BERT config.json (BertModel, BertForMaskedLM and kin)."""
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise TinyLMError(f"{source}: hidden_act {act!r} is not supported; expected one of {sorted(_ACTS)}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise TinyLMError(
            f"{source}: position_embedding_type {hf['position_embedding_type']!r} is not supported"
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise TinyLMError(f"{source}: a BERT decoder (is_decoder / add_cross_attention) is not supported")
    try:
        fields = dict(
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"],
            d_ff=hf["intermediate_size"],
        )
    except KeyError as e:
        raise TinyLMError(f"{source}: missing field {e.args[0]!r}") from None
    # BertModel (and its task classes) build a pooler, BertForMaskedLM does not; checkpoints of the latter
    # may still carry one, which is then skipped.
    pooler = hf.get("architectures", ["BertModel"])[0] != "BertForMaskedLM"
    return ModelConfig(
        family="bert",
        **fields,
        pooler=pooler,
        mlp=_ACTS[act],
        max_seq_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
