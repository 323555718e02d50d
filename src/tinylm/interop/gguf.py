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
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm

from ..errors import TinyLMError
from ..io import write_json
from ..models import Backbone, ModelConfig, build_model, save_model
from ..models.checkpoint import DType, parse_dtype
from . import output_dir

ARCHITECTURES = ("llama", "qwen2")
"""Llama (SmolLM2, TinyLlama, ...) and Qwen2 (q/k/v biases, no q/k permutation in the file)."""

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

_TOP_LEVEL = {"token_embd": "embed", "output_norm": "norm", "output": "lm_head"}
_PER_LAYER = {
    "attn_norm": "attn_norm",
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.o_proj",
    "ffn_norm": "mlp_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# How text is split before BPE, by `tokenizer.ggml.pre` (llama.cpp's name for the pre-tokenizer).
_GPT2 = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_PRE_TOKENIZERS = {
    "default": _GPT2,
    "gpt2": _GPT2,
    "gpt-2": _GPT2,
    # SmolLM / StarCoder: every digit on its own, then GPT-2's split.
    "smollm": [pre_tokenizers.Digits(individual_digits=True), *_GPT2],
    "starcoder": [pre_tokenizers.Digits(individual_digits=True), *_GPT2],
    "llama-bpe": [
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ],
    "qwen2": [
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ],
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


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
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling={"type": "linear", "factor": float(get("rope.scaling.factor"))}
        if scaling == "linear"
        else None,
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        attn_bias=arch == "qwen2",
        tie_embeddings=tie,
    )


def _our_name(name: str) -> str | None:
    """tinylm's name for a llama.cpp tensor name ("blk.3.attn_q.weight" -> "blocks.3.attn.q_proj.weight")."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _PER_LAYER:
        return f"blocks.{parts[1]}.{_PER_LAYER[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[parts[0]]}.{parts[1]}"
    return None


def _check_tensors(reader: GGUFReader, path: Path) -> dict[str, ReaderTensor]:
    """Our name -> GGUF tensor, after checking every name and type, before any slow dequantisation."""
    tensors = {}
    for t in reader.tensors:
        name = _our_name(t.name)
        if name is None:
            raise TinyLMError(f"{path}: unexpected tensor {t.name!r}; tinylm has no place for it")
        if t.tensor_type not in TENSOR_TYPES:
            raise TinyLMError(
                f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which tinylm cannot dequantise; "
                f"supported: {', '.join(q.name for q in TENSOR_TYPES)}"
            )
        tensors[name] = t
    return tensors


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: back from interleaved rotary pairs to rotate-half order per head.

    GGML rotates adjacent feature pairs while Hugging Face rotates the two halves of each head, so
    llama.cpp's converter reorders each head's rows from (half, i) to (i, half); this is its inverse.
    """
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


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
    heads = {"attn.q_proj": model.config.n_head, "attn.k_proj": model.config.n_kv_head}
    with torch.no_grad():
        for name, t in tqdm(tensors.items(), desc="dequantising", unit="tensor", disable=None):
            # GGUF lists dimensions innermost first; numpy and torch want them outermost first.
            w = dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            module = name.split(".", 2)[-1].rsplit(".", 1)[0]
            if permute_qk and module in heads:
                w = _unpermute(w, heads[module])
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
    if pre not in _PRE_TOKENIZERS:
        raise TinyLMError(
            f"{path}: pre-tokenizer {pre!r} is not supported; expected one of {sorted(_PRE_TOKENIZERS)}"
        )
    tokens = _meta(reader, path, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _meta(reader, path, "tokenizer.ggml.merges")]
    types = _meta(reader, path, "tokenizer.ggml.token_type", None) or [1] * len(tokens)  # 1 = normal
    if len(types) != len(tokens):
        raise TinyLMError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(_PRE_TOKENIZERS[pre])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == _CONTROL
        ]
    )
    tok.add_tokens(
        [AddedToken(t, normalized=False) for t, k in zip(tokens, types, strict=True) if k == _USER_DEFINED]
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
