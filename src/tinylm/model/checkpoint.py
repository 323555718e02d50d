"""Checkpoint directories: `model.safetensors` + a Hugging Face `config.json` + the tokenizer files.

The layout is Hugging Face's on purpose. `transformers.AutoModelForCausalLM.from_pretrained(dir)` loads
a tinylm checkpoint whose config has a transformers twin (Llama, or Qwen2 when q/k/v carry biases), and
`load_model` loads a Hugging Face Llama / SmolLM2 / Qwen2 directory as it is, so import and export are
thin. The full tinylm config also rides along under the `"tinylm"` key, so configs transformers cannot
express (LayerNorm, GELU, NTK rope scaling) still round-trip exactly.

Loading reads only JSON and safetensors, never pickle, so an untrusted checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import atomic_dir, read_json, write_json
from .config import PRESETS, ModelConfig
from .decoder import TinyLM
from .flops import model_flops_per_token, param_counts

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
DType = Literal["float32", "bfloat16", "float16"]
"""Weight dtypes a command can store."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Our module names differ from transformers' in three path segments; everything else matches.
_TO_HF = {"attn": "self_attn", "input_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm"}
_FROM_HF = {hf: ours for ours, hf in _TO_HF.items()}
_HF_TWINS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype for a command-line name ("float32", "bfloat16", "float16")."""
    if name not in DTYPES:
        raise TinyLMError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def hf_name(name: str) -> str:
    """transformers' name for one of our parameters ("layers.0.attn.q_proj.weight" -> "model.layers.0.self_attn...")."""
    if name.startswith("lm_head."):
        return name
    return "model." + ".".join(_TO_HF.get(part, part) for part in name.split("."))


def tinylm_name(name: str) -> str:
    """Inverse of `hf_name`."""
    if not name.startswith("model."):
        return name
    return ".".join(_FROM_HF.get(part, part) for part in name.removeprefix("model.").split("."))


def hf_architecture(config: ModelConfig) -> str:
    """The transformers class that computes exactly what `TinyLM(config)` computes.

    Raises TinyLMError saying which field has no transformers equivalent.
    """
    if config.norm != "rmsnorm":
        raise TinyLMError("model.norm=layernorm has no transformers Llama/Qwen2 twin (they use RMSNorm)")
    if config.mlp != "swiglu":
        raise TinyLMError("model.mlp=gelu has no transformers Llama/Qwen2 twin (they use SwiGLU)")
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
        rope_scaling = {
            "rope_type": "linear",
            "type": "linear",
            "factor": float(config.rope_scaling["factor"]),
        }
    hf = {
        "architectures": [arch],
        "model_type": _HF_TWINS.get(arch, "tinylm"),
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


def config_from_hf(hf: dict[str, Any], source: str | os.PathLike = CONFIG) -> ModelConfig:
    """A ModelConfig from a config.json: ours (the "tinylm" key) or a transformers Llama / Qwen2 one."""
    if "tinylm" in hf:
        return ModelConfig.from_dict(hf["tinylm"])
    model_type = hf.get("model_type")
    if model_type not in ("llama", "qwen2"):
        raise TinyLMError(
            f"{source}: model_type {model_type!r} is not supported; expected 'llama' or 'qwen2'"
        )
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


def _special_token_ids(tokenizer_dir: Path) -> dict[str, int]:
    """bos/eos/pad token ids named in tokenizer_config.json, looked up in tokenizer.json (for HF generate)."""
    config_path = tokenizer_dir / "tokenizer_config.json"
    if not config_path.exists():
        return {}
    config, tok = read_json(config_path), read_json(tokenizer_dir / "tokenizer.json")
    ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab = tok.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        ids = {**vocab, **ids}
    out = {}
    for role in ("bos", "eos", "pad"):
        token = config.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        if token in ids:
            out[f"{role}_token_id"] = ids[token]
    return out


def save_checkpoint(
    model: TinyLM, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None
) -> Path:
    """Write `model` (and the tokenizer files found in `tokenizer_dir`) to `out_dir`, atomically.

    Weights keep the model's dtype and take transformers' names; a tied LM head is stored once, as the
    embedding, which is how transformers expects tied checkpoints.
    """
    tensors = {hf_name(n): p.detach().cpu().contiguous() for n, p in model.named_parameters()}
    dtype = next(iter(tensors.values())).dtype
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
    if tok_dir is not None and not (tok_dir / "tokenizer.json").is_file():
        raise TinyLMError(f"{tok_dir} holds no tokenizer.json")
    special = _special_token_ids(tok_dir) if tok_dir is not None else {}
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        write_json(tmp / CONFIG, to_hf_config(model.config, dtype, special))
        for name in TOKENIZER_FILES if tok_dir is not None else ():
            if (tok_dir / name).is_file():
                shutil.copyfile(tok_dir / name, tmp / name)
    return Path(out_dir)


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file holding it (one file, or shards with an index)."""
    single, index = model_dir / WEIGHTS, model_dir / WEIGHTS_INDEX
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    if index.is_file():
        return {name: model_dir / file for name, file in read_json(index)["weight_map"].items()}
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise TinyLMError(
            f"{model_dir} holds only pickle weights (*.bin / *.pt); tinylm loads safetensors only, because "
            "unpickling can run code. Convert them with transformers' save_pretrained(safe_serialization=True)"
        )
    raise TinyLMError(f"{model_dir} holds no {WEIGHTS} (or {WEIGHTS_INDEX})")


def _load_weights(model: TinyLM, model_dir: Path) -> None:
    """Copy every parameter from the directory's safetensors, checking names and shapes first."""
    expected = {hf_name(n): p for n, p in model.named_parameters()}
    files = _tensor_files(model_dir)
    # Buffers recomputed from the config, and a tied head that some exporters write out anyway.
    ignorable = {n for n in files if n.endswith("rotary_emb.inv_freq")}
    if model.config.tie_embeddings:
        ignorable.add("lm_head.weight")
    missing = sorted(set(expected) - set(files))
    unexpected = sorted(set(files) - set(expected) - ignorable)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TinyLMError(
            f"{model_dir}: checkpoint lacks tensor {missing[0]!r}{more} that the config implies"
        )
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise TinyLMError(f"{model_dir}: checkpoint has unexpected tensor {unexpected[0]!r}{more}")
    by_file: dict[Path, list[str]] = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    with torch.no_grad(), tqdm(total=len(expected), desc="loading", unit="tensor", disable=None) as bar:
        for path, names in by_file.items():
            if not path.is_file():
                raise TinyLMError(f"{path} is missing (named in {WEIGHTS_INDEX})")
            with safe_open(path, framework="pt") as f:
                for name in names:
                    shape, want = tuple(f.get_slice(name).get_shape()), tuple(expected[name].shape)
                    if shape != want:
                        raise TinyLMError(
                            f"{path}: tensor {name!r} has shape {shape}, the config implies {want}"
                        )
                    expected[name].copy_(f.get_tensor(name))
                    bar.update()


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a checkpoint (or Hugging Face) directory, without touching the weights."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise TinyLMError(f"{model_dir} is not a model directory: no {CONFIG}")
    try:
        hf = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{path} is not valid JSON: {e}") from None
    return config_from_hf(hf, path)


def load_model(
    model_dir: str | os.PathLike, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> TinyLM:
    """A TinyLM in eval mode from a tinylm checkpoint or a Hugging Face Llama / Qwen2 directory."""
    model_dir = Path(model_dir)
    model = TinyLM(read_config(model_dir))
    _load_weights(model, model_dir)
    return model.to(device=device, dtype=dtype).eval()


def load_checkpoint(model_dir: str | os.PathLike) -> tuple[TinyLM, Path]:
    """The model and the directory of its tokenizer files (the checkpoint directory itself)."""
    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise TinyLMError(f"{model_dir} has no tokenizer.json; load_model() loads the weights alone")
    return load_model(model_dir), model_dir


def model_info(model: str, context: int | None = None) -> None:
    """Print a model's config, parameter counts and training FLOPs per token.

    Args:
        model: A checkpoint directory, a Hugging Face Llama/Qwen2 directory, or a preset name.
        context: Context length for the FLOPs estimate (default: the model's max_seq_len).
    """
    if Path(model).is_dir():
        config = read_config(model)
        arch = read_json(Path(model) / CONFIG).get("architectures", ["?"])[0]
    elif model in PRESETS:
        config, arch = ModelConfig.preset(model), f"preset {model}"
    else:
        raise TinyLMError(
            f"{model!r} is neither a model directory nor a preset ({', '.join(sorted(PRESETS))})"
        )
    counts, ctx = param_counts(config), context or config.max_seq_len
    print(f"model: {model} ({arch})")
    for key, value in config.to_dict().items():
        print(f"  {key}: {value}")
    print(
        f"parameters: {counts.total:,} total, {counts.blocks:,} non-embedding, {counts.embedding:,} embedding"
    )
    print(f"training FLOPs per token at context {ctx}: {model_flops_per_token(config, ctx):,}")
