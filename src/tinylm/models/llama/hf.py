"""The llama family's Hugging Face twins: `LlamaForCausalLM`, and `Qwen2ForCausalLM` when q/k/v carry biases.

Our module names differ from transformers' in a few path segments (`hf_name`); configs map field by field.
Our full config also rides along in config.json under "tinylm", so settings transformers cannot express
(LayerNorm, GELU, NTK rope scaling) still round-trip exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import TinyLMError
from ..config import ModelConfig

_TO_HF = {
    "embed": "embed_tokens",
    "blocks": "layers",
    "attn": "self_attn",
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
}
MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def hf_name(name: str) -> str:
    """transformers' name for one of our parameters ("blocks.0.attn.q_proj.weight" -> "model.layers.0.self_attn...")."""
    if name.startswith("lm_head."):
        return name
    return "model." + ".".join(_TO_HF.get(part, part) for part in name.split("."))


def hf_architecture(config: ModelConfig) -> str:
    """The transformers class that computes exactly what `Llama(config)` computes."""
    if config.norm != "rmsnorm":
        raise TinyLMError("model.norm=layernorm has no transformers Llama/Qwen2 twin (they use RMSNorm)")
    if config.mlp != "swiglu":
        raise TinyLMError("model.mlp=gelu has no transformers Llama/Qwen2 twin (they use SwiGLU)")
    if config.prefix_lm:
        raise TinyLMError(
            "model.prefix_lm has no transformers twin (its causal LMs never read a prefix both ways)"
        )
    if config.rope_scaling and config.rope_scaling["type"] != "linear":
        raise TinyLMError("model.rope_scaling.type=ntk (static NTK) has no transformers equivalent")
    if config.attn_bias:
        # Llama's attention_bias also puts a bias on o_proj; Qwen2 has q/k/v biases only, like ours.
        if config.mlp_bias:
            raise TinyLMError("model.attn_bias with model.mlp_bias has no transformers twin")
        return "Qwen2ForCausalLM"
    return "LlamaForCausalLM"


def to_hf_config(config: ModelConfig, dtype: torch.dtype, special_ids: dict[str, int]) -> dict[str, Any]:
    """config.json contents: transformers' Llama/Qwen2 fields plus our own config under "tinylm"."""
    try:
        arch = hf_architecture(config)
    except TinyLMError:
        arch = "TinyLM"
    rope_scaling = None
    if config.rope_scaling:
        factor = float(config.rope_scaling["factor"])
        rope_scaling = {"rope_type": "linear", "type": "linear", "factor": factor}
    hf = {
        "architectures": [arch],
        "model_type": MODEL_TYPES.get(arch, "tinylm"),
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": config.mlp_bias,
        "attention_dropout": config.dropout,
        "initializer_range": config.init_std,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **special_ids,
    }
    if arch == "Qwen2ForCausalLM":
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.n_layer)
        del hf["attention_bias"], hf["mlp_bias"]
    hf["tinylm"] = config.to_dict()
    return hf


def from_hf_config(hf: dict[str, Any], source: str) -> ModelConfig:
    """A ModelConfig from a transformers Llama / Qwen2 config.json."""
    model_type = hf.get("model_type")
    if hf.get("hidden_act", "silu") != "silu":
        raise TinyLMError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported; expected 'silu'")
    if model_type == "llama" and hf.get("attention_bias"):
        raise TinyLMError(f"{source}: attention_bias=true (a bias on o_proj too) is not supported")
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise TinyLMError(f"{source}: use_sliding_window=true is not supported")
    try:
        d_model, n_head = hf["hidden_size"], hf["num_attention_heads"]
        fields = dict(
            vocab_size=hf["vocab_size"],
            d_model=d_model,
            n_layer=hf["num_hidden_layers"],
            n_head=n_head,
            n_kv_head=hf.get("num_key_value_heads") or n_head,
            d_ff=hf["intermediate_size"],
        )
    except KeyError as e:
        raise TinyLMError(f"{source}: missing field {e.args[0]!r}") from None
    head_dim = hf.get("head_dim")
    if head_dim is not None and n_head and head_dim != d_model // n_head:
        raise TinyLMError(f"{source}: head_dim={head_dim} differs from hidden_size/num_attention_heads")
    # transformers 5 writes rope_parameters; older versions write rope_theta and rope_scaling.
    rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "linear"):
        raise TinyLMError(f"{source}: rope scaling type {kind!r} is not supported; expected 'linear' or none")
    return ModelConfig(
        family="llama",
        **fields,
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        rope_scaling={"type": "linear", "factor": float(rope["factor"])} if kind == "linear" else None,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        attn_bias=model_type == "qwen2",
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        dropout=float(hf.get("attention_dropout", 0.0)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
