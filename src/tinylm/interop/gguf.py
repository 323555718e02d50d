"""Import a GGUF file (llama.cpp's format) as a tinylm checkpoint.

The `gguf` package reads the file (memory-mapped) and dequantises each tensor to float32; we map
llama.cpp's tensor names to ours, undo the row permutation llama.cpp applies to Llama's q/k projections,
and rebuild the tokenizer (`tokenizer.json` + `tokenizer_config.json`) from the vocabulary, merges,
special tokens and chat template stored in the metadata, since a GGUF carries no tokenizer files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, ReaderTensor
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import write_json
from ..models import Backbone, ModelConfig, build_model, save_model
from ..models.checkpoint import DType, parse_dtype
from . import output_dir
from .gguf_layout import (
    ARCHITECTURES,
    CONTROL,
    PRE_TOKENIZERS,
    USER_DEFINED,
    our_name,
    qk_heads,
    unpermute,
)

TENSOR_TYPES = (
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q8_0,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
)
"""Types dequantised through `gguf.quants`; the tests cover F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1."""


def import_gguf(file: str, out: str | None = None, dtype: DType = "float32", overwrite: bool = False) -> Path:
    """Import a GGUF model file (Llama or Qwen2 architecture) as a tinylm checkpoint.

    Args:
        file: The .gguf file.
        out: Checkpoint directory to write.
        dtype: Weight dtype to store: float32, bfloat16 or float16.
        overwrite: Replace `out` if it exists.
    """
    path, out_dir = Path(file), output_dir(out, overwrite)
    torch_dtype = parse_dtype(dtype)
    reader = _open(path)
    arch = _meta(reader, path, "general.architecture")
    if arch not in ARCHITECTURES:
        raise TinyLMError(
            f"{path}: architecture {arch!r} is not supported; expected one of {list(ARCHITECTURES)}"
        )
    tensors = _check_tensors(reader, path)
    config = _config(reader, path, arch, tie=tensors.get("lm_head.weight") is None)
    with tempfile.TemporaryDirectory() as tok_dir:
        _write_tokenizer(reader, path, Path(tok_dir), config)  # first, so a bad tokenizer fails fast
        model = build_model(config)
        _load_tensors(model, tensors, path, permute_qk=arch == "llama")
        save_model(model.to(torch_dtype), out_dir, tokenizer_dir=tok_dir)
    print(f"imported {path} -> {out_dir} ({arch}, {model.num_params():,} parameters, {dtype})")
    return out_dir


def _open(path: Path) -> GGUFReader:
    if not path.is_file():
        raise TinyLMError(f"{path} does not exist")
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as e:
        raise TinyLMError(f"{path} is not a readable GGUF file: {e}") from None


_REQUIRED = object()


def _meta(reader: GGUFReader, path: Path, key: str, default: Any = _REQUIRED) -> Any:
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise TinyLMError(f"{path}: GGUF metadata lacks {key!r}")
        return default
    return field.contents()


def _config(reader: GGUFReader, path: Path, arch: str, tie: bool) -> ModelConfig:
    """ModelConfig from the `{arch}.*` metadata keys llama.cpp writes."""

    def get(key: str, default: Any = _REQUIRED) -> Any:
        value = _meta(reader, path, f"{arch}.{key}", default)
        if isinstance(value, list):
            raise TinyLMError(f"{path}: {arch}.{key} varies per layer, which tinylm does not support")
        return value

    n_head = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    rope_dim = get("rope.dimension_count", None)
    if rope_dim is not None and n_head and rope_dim != d_model // n_head:
        raise TinyLMError(
            f"{path}: partial rotary embeddings ({arch}.rope.dimension_count={rope_dim}) are not supported"
        )
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise TinyLMError(f"{path}: rope scaling {scaling!r} is not supported; expected 'linear' or none")
    vocab = get("vocab_size", None) or len(_meta(reader, path, "tokenizer.ggml.tokens"))
    return ModelConfig(
        family="llama",
        vocab_size=int(vocab),
        d_model=d_model,
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_kv_head=int(get("attention.head_count_kv", n_head)),
        d_ff=int(get("feed_forward_length")),
        max_seq_len=int(get("context_length")),
        rope_theta=_decimal(get("rope.freq_base", 10000.0)),
        rope_scaling={"type": "linear", "factor": _decimal(get("rope.scaling.factor"))}
        if scaling == "linear"
        else None,
        norm_eps=_decimal(get("attention.layer_norm_rms_epsilon")),
        attn_bias=arch == "qwen2",
        tie_embeddings=tie,
    )


def _decimal(value: float) -> float:
    """The shortest decimal that a float32 metadata value rounds from (1e-05, not 9.999999747378752e-06):
    the value the writer meant, and the same float32 in every computation."""
    return float(str(np.float32(value)))


def _check_tensors(reader: GGUFReader, path: Path) -> dict[str, ReaderTensor]:
    """Our name -> GGUF tensor, after checking every name and type, before any slow dequantisation."""
    tensors = {}
    for t in reader.tensors:
        name = our_name(t.name)
        if name is None:
            raise TinyLMError(f"{path}: unexpected tensor {t.name!r}; tinylm has no place for it")
        if t.tensor_type not in TENSOR_TYPES:
            raise TinyLMError(
                f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which tinylm cannot dequantise; "
                f"supported: {', '.join(q.name for q in TENSOR_TYPES)}"
            )
        tensors[name] = t
    return tensors


def _load_tensors(model: Backbone, tensors: dict[str, ReaderTensor], path: Path, permute_qk: bool) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise TinyLMError(f"{path}: GGUF lacks tensor {missing[0]!r} (tinylm name) that its metadata implies")
    unexpected = sorted(set(tensors) - set(params))  # e.g. a block beyond block_count, or a bias Llama lacks
    if unexpected:
        raise TinyLMError(
            f"{path}: unexpected tensor {tensors[unexpected[0]].name!r} for the metadata's shape"
        )
    with torch.no_grad():
        for name, t in tqdm(tensors.items(), desc="dequantising", unit="tensor", disable=None):
            # GGUF lists dimensions innermost first; numpy and torch want them outermost first.
            w = dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            heads = qk_heads(name, model.config) if permute_qk else None
            if heads:
                w = unpermute(w, heads)
            if tuple(w.shape) != tuple(params[name].shape):
                raise TinyLMError(
                    f"{path}: tensor {t.name!r} has shape {w.shape}, the metadata implies {tuple(params[name].shape)}"
                )
            params[name].copy_(torch.from_numpy(np.require(w, requirements=["C", "W"])))


def _write_tokenizer(reader: GGUFReader, path: Path, out: Path, config: ModelConfig) -> None:
    """tokenizer.json (byte-level BPE) and tokenizer_config.json from the `tokenizer.*` metadata."""
    kind = _meta(reader, path, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise TinyLMError(
            f"{path}: tokenizer model {kind!r} is not supported; expected byte-level BPE ('gpt2')"
        )
    pre = _meta(reader, path, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise TinyLMError(
            f"{path}: pre-tokenizer {pre!r} is not supported; expected one of {sorted(PRE_TOKENIZERS)}"
        )
    tokens = _meta(reader, path, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _meta(reader, path, "tokenizer.ggml.merges")]
    types = _meta(reader, path, "tokenizer.ggml.token_type", None) or [1] * len(tokens)  # 1 = normal
    if len(types) != len(tokens):
        raise TinyLMError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(PRE_TOKENIZERS[pre])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == CONTROL
        ]
    )
    tok.add_tokens(
        [AddedToken(t, normalized=False) for t, k in zip(tokens, types, strict=True) if k == USER_DEFINED]
    )
    tok.save(str(out / "tokenizer.json"))

    def token(role: str) -> str | None:
        i = _meta(reader, path, f"tokenizer.ggml.{role}_token_id", None)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    config_json = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
        # Chat templates write their own BOS, so the tokenizer adds none (as transformers' GGUF loader does).
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_seq_len,
        "chat_template": _meta(reader, path, "tokenizer.chat_template", None),
    }
    write_json(out / "tokenizer_config.json", {k: v for k, v in config_json.items() if v is not None})
