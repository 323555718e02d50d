"""The t5 family's Hugging Face twin: `T5ForConditionalGeneration` (v1.0 relu or v1.1 gated-gelu).

Our parameter names map to transformers' segment by segment (`hf_name`); our full config rides along in
config.json under "tinylm".
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ...errors import TinyLMError
from ..config import ModelConfig

_BLOCK = re.compile(r"(encoder|decoder)_blocks\.(\d+)\.(.+)")
_IN_BLOCK = {
    # (ours, transformers'), the decoder's layer indices: self-attention 0, cross-attention 1, MLP 2
    "attn_norm": "layer.0.layer_norm",
    "attn.q_proj": "layer.0.SelfAttention.q",
    "attn.k_proj": "layer.0.SelfAttention.k",
    "attn.v_proj": "layer.0.SelfAttention.v",
    "attn.o_proj": "layer.0.SelfAttention.o",
    "position_bias": "layer.0.SelfAttention.relative_attention_bias",
    "cross_norm": "layer.1.layer_norm",
    "cross_attn.q_proj": "layer.1.EncDecAttention.q",
    "cross_attn.k_proj": "layer.1.EncDecAttention.k",
    "cross_attn.v_proj": "layer.1.EncDecAttention.v",
    "cross_attn.o_proj": "layer.1.EncDecAttention.o",
    "mlp_norm": "layer.{mlp}.layer_norm",
    "mlp.gate_proj": "layer.{mlp}.DenseReluDense.wi_0",  # gated-gelu: wi_0 activated, wi_1 linear
    "mlp.up_proj": "layer.{mlp}.DenseReluDense.wi_1",
    "mlp.in_proj": "layer.{mlp}.DenseReluDense.wi",
    "mlp.down_proj": "layer.{mlp}.DenseReluDense.wo",
}
_TOP = {"embed": "shared", "encoder_norm": "encoder.final_layer_norm", "norm": "decoder.final_layer_norm"}


def hf_name(name: str) -> str:
    """transformers' name for one of our parameters or modules ("decoder_blocks.1.cross_attn.q_proj.weight"
    -> "decoder.block.1.layer.1.EncDecAttention.q.weight"); what follows a mapped module (its weight, a LoRA
    adapter's A and B) is kept."""
    top, _, rest = name.partition(".")
    if top in _TOP or top == "lm_head":
        return ".".join(filter(None, (_TOP.get(top, top), rest)))
    match = _BLOCK.fullmatch(name)
    for ours, theirs in _IN_BLOCK.items() if match else ():
        stack, idx, inner = match.groups()
        if inner == ours or inner.startswith(ours + "."):
            theirs = theirs.format(mlp=2 if stack == "decoder" else 1)
            return f"{stack}.block.{idx}.{theirs}{inner[len(ours) :]}"
    raise TinyLMError(f"t5 has no transformers name for {name!r}")


def hf_architecture(config: ModelConfig) -> str:
    """`T5ForConditionalGeneration`, for the MLPs T5 has."""
    if config.mlp not in ("gated-gelu", "relu"):
        raise TinyLMError(f"model.mlp={config.mlp} has no transformers T5 twin (it has gated-gelu or relu)")
    if config.n_kv_head != config.n_head:
        raise TinyLMError("model.n_kv_head != model.n_head has no transformers T5 twin (no grouped queries)")
    return "T5ForConditionalGeneration"


def to_hf_config(config: ModelConfig, dtype: torch.dtype, special_ids: dict[str, int]) -> dict[str, Any]:
    """config.json contents: transformers' T5 fields plus our own config under "tinylm"."""
    try:
        arch = hf_architecture(config)
    except TinyLMError:
        arch = "TinyLM"
    hf = {
        "architectures": [arch],
        "model_type": "t5" if arch != "TinyLM" else "tinylm",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.head_dim,
        "d_ff": config.d_ff,
        "num_layers": config.n_layer,
        "num_decoder_layers": config.n_decoder_layer,
        "num_heads": config.n_head,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "dropout_rate": config.dropout,
        "layer_norm_epsilon": config.norm_eps,
        "initializer_factor": config.init_std / 0.02,
        "feed_forward_proj": config.mlp,
        "tie_word_embeddings": config.tie_embeddings,
        "is_encoder_decoder": True,
        "use_cache": True,
        "n_positions": config.max_seq_len,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **special_ids,
        "decoder_start_token_id": config.decoder_start_id,
    }
    hf["tinylm"] = config.to_dict()
    return hf


def from_hf_config(hf: dict[str, Any], source: str) -> ModelConfig:
    """A ModelConfig from a transformers T5 config.json."""
    mlp = hf.get("feed_forward_proj", "relu")
    if mlp not in ("gated-gelu", "relu"):
        raise TinyLMError(
            f"{source}: feed_forward_proj {mlp!r} is not supported; expected gated-gelu or relu"
        )
    try:
        d_model, n_head, d_kv = hf["d_model"], hf["num_heads"], hf["d_kv"]
        fields = dict(vocab_size=hf["vocab_size"], d_model=d_model, n_layer=hf["num_layers"], d_ff=hf["d_ff"])
    except KeyError as e:
        raise TinyLMError(f"{source}: missing field {e.args[0]!r}") from None
    if d_kv * n_head != d_model:
        raise TinyLMError(f"{source}: d_kv × num_heads = {d_kv * n_head} differs from d_model={d_model}")
    return ModelConfig(
        family="t5",
        **fields,
        n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"],
        n_head=n_head,
        max_seq_len=hf.get("n_positions", 512),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
        mlp=mlp,
        # transformers 5 always writes tie_word_embeddings=true and says with scale_decoder_outputs whether
        # the head is T5 v1.0's tied and scaled one; earlier versions said it with tie_word_embeddings.
        tie_embeddings=bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))),
        dropout=float(hf.get("dropout_rate", 0.0)),
        init_std=0.02 * float(hf.get("initializer_factor", 1.0)),
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        decoder_start_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
    )
