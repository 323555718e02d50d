"""Export a tinylm decoder as a GGUF file that llama.cpp loads and `tinylm import gguf` reads back.

The exact inverse of the import: our names to llama.cpp's, Llama's q/k rows permuted into GGML's rotary
order, and the tokenizer written as `tokenizer.ggml.*` metadata. Matrices are stored in the chosen type
(quantised with `gguf.quants`, the same reference quantisers llama.cpp's converter uses); norm weights and
biases stay F32, as llama.cpp expects, a matrix whose rows do not split into 32-wide blocks falls back
to F16, and with a 4-bit type the output head stays Q8_0 (as in llama.cpp's own Q4_0 / Q4_1 files, and so
SmolLM2's Q4_1 file comes back byte for byte). A tied head is written once, as `token_embd` (llama.cpp reuses it when `output` is absent).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGUFWriter, LlamaFileType, RopeScalingType
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from ..errors import TinyLMError
from ..io import atomic_path, read_json
from ..models import ModelConfig, load_model, read_config
from ..tokenizer import Tokenizer
from .gguf_layout import CONTROL, PRE_TOKENIZERS, UNUSED, USER_DEFINED, gguf_name, permute, qk_heads

_FOUR_BIT = (Q.Q4_0, Q.Q4_1)
"""Types whose output head is kept at Q8_0, as llama.cpp's own quantiser does: it is the most sensitive."""
GGUFType = Literal["f32", "f16", "q8_0", "q4_0", "q4_1"]
"""Weight types `tinylm export gguf --type` writes."""
_TYPES = {
    "f32": (Q.F32, LlamaFileType.ALL_F32),
    "f16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (Q.Q4_1, LlamaFileType.MOSTLY_Q4_1),
}


def export_gguf(ckpt: str, out: str | None = None, type: GGUFType = "f16", overwrite: bool = False) -> Path:
    """Export a tinylm decoder checkpoint (Llama or Qwen2 shaped) as a GGUF file that llama.cpp loads.

    Args:
        ckpt: tinylm checkpoint directory, with its byte-level BPE tokenizer.
        out: The .gguf file to write.
        type: Type of the weight matrices: f32, f16, q8_0, q4_0 or q4_1 (norms and biases stay f32, a
            4-bit file's output head q8_0).
        overwrite: Replace `out` if it exists.
    """
    ckpt_dir = Path(ckpt)
    if type not in _TYPES:
        raise TinyLMError(f"--type must be one of {list(_TYPES)}, got {type!r}")
    if not out:
        raise TinyLMError("an output file is required: pass --out FILE.gguf")
    out_path = Path(out)
    if out_path.is_dir():
        raise TinyLMError(f"{out_path} is a directory; --out names the .gguf file to write")
    if out_path.exists() and not overwrite:
        raise TinyLMError(f"{out_path} already exists; pass --overwrite true to replace it")
    config = read_config(ckpt_dir)
    arch = _architecture(config, ckpt_dir)
    vocab = _vocabulary(ckpt_dir, config.vocab_size)  # before the weights, so a bad tokenizer fails fast
    started = time.perf_counter()
    model = load_model(ckpt_dir)
    qtype, file_type = _TYPES[type]
    with atomic_path(out_path) as tmp:
        writer = GGUFWriter(tmp, arch)
        try:
            _write_config(writer, config, file_type, ckpt_dir.name)
            _write_tokenizer(writer, vocab)
            fallbacks = [
                _add_tensor(writer, name, p, qtype, config, permute_qk=arch == "llama")
                for name, p in model.named_parameters()
            ]
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    fallbacks = [f for f in fallbacks if f]
    if fallbacks:
        print(
            f"kept {len(fallbacks)} matrices at F16, their rows not a multiple of 32: {', '.join(fallbacks)}"
        )
    size = out_path.stat().st_size / 2**20
    print(
        f"exported {ckpt_dir} -> {out_path} ({arch}, {qtype.name}, {size:.1f} MiB, "
        f"{time.perf_counter() - started:.1f}s)"
    )
    return out_path


def _architecture(c: ModelConfig, ckpt_dir: Path) -> str:
    """llama, or qwen2 for q/k/v biases; TinyLMError for a shape llama.cpp's decoders do not have."""
    if c.family != "llama":
        raise TinyLMError(
            f"{ckpt_dir}: family {c.family!r} has no GGUF export; it writes decoder-only (llama family) models"
        )
    unsupported = {
        "model.prefix_lm": c.prefix_lm,
        "model.norm": c.norm != "rmsnorm" and c.norm,
        "model.mlp": c.mlp != "swiglu" and c.mlp,
        "model.mlp_bias": c.mlp_bias,
        "model.rope_scaling": c.rope_scaling and c.rope_scaling["type"] != "linear" and c.rope_scaling,
    }
    for field, value in unsupported.items():
        if value:
            raise TinyLMError(
                f"{ckpt_dir}: {field}={value!r} has no llama.cpp equivalent; GGUF export writes causal "
                "RMSNorm + SwiGLU decoders (rope scaling linear or none)"
            )
    return "qwen2" if c.attn_bias else "llama"


def _write_config(writer: GGUFWriter, c: ModelConfig, file_type: LlamaFileType, name: str) -> None:
    writer.add_name(name)
    writer.add_file_type(file_type)
    if file_type not in (LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16):
        writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_context_length(c.max_seq_len)
    writer.add_embedding_length(c.d_model)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(c.d_ff)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    if c.rope_scaling:
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(c.rope_scaling["factor"]))
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(c.vocab_size)


def _vocabulary(ckpt_dir: Path, vocab_size: int) -> dict[str, Any]:
    """The `tokenizer.*` metadata of the checkpoint's tokenizer; TinyLMError unless it is byte-level BPE."""
    path = ckpt_dir / "tokenizer.json"
    if not path.is_file():
        raise TinyLMError(f"{ckpt_dir} has no tokenizer.json; a GGUF file carries its tokenizer")
    spec, tok = read_json(path), Tokenizer.load(ckpt_dir)
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel" or spec.get("normalizer") or not pre:
        raise TinyLMError(
            f"{path} is not a byte-level BPE tokenizer llama.cpp knows (model {model.get('type')}, decoder "
            f"{decoder.get('type')}, pre-tokenizer {json.dumps(spec.get('pre_tokenizer'))[:80]}); "
            "GGUF export writes llama.cpp's 'gpt2' tokenizer"
        )
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    if tok.vocab_size > vocab_size:
        raise TinyLMError(
            f"{path} has {tok.vocab_size} tokens, more than the model's {vocab_size} embeddings"
        )
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    if None in tokens:
        raise TinyLMError(f"{path}: no token has id {tokens.index(None)}; GGUF needs every id spelt")
    types = [
        (CONTROL if added[i].get("special") else USER_DEFINED) if i in added else 1
        for i in range(len(tokens))
    ]
    padding = range(len(tokens), vocab_size)  # embedding rows no token uses (a vocabulary rounded up)
    unk = tok.config.get("unk_token")
    return {
        "pre": pre,
        "tokens": tokens + [f"[PAD{i}]" for i in padding],
        "types": types + [UNUSED] * len(padding),
        "merges": [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])],
        "bos": tok.bos_id,
        "eos": tok.eos_id,
        "pad": tok.pad_id,
        "unk": tok.token_to_id(unk.get("content") if isinstance(unk, dict) else unk) if unk else None,
        "add_bos": bool(tok.config.get("add_bos_token", False)),
        "chat_template": tok.chat_template,
    }


def _pre_tokenizer_name(spec: dict[str, Any] | None) -> str | None:
    """The first `tokenizer.ggml.pre` name whose pre-tokenizer equals `spec` (offset trimming aside)."""

    def steps(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
        parts = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre]
        return [{k: v for k, v in p.items() if k != "trim_offsets"} for p in parts if p]

    def serialised(parts: list) -> dict[str, Any]:
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(parts)
        return json.loads(tok.to_str())["pre_tokenizer"]

    ours = steps(spec)
    return next((name for name, parts in PRE_TOKENIZERS.items() if steps(serialised(parts)) == ours), None)


def _write_tokenizer(writer: GGUFWriter, v: dict[str, Any]) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(v["pre"])
    writer.add_token_list(v["tokens"])
    writer.add_token_types(v["types"])
    writer.add_token_merges(v["merges"])
    for role, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
        ("unk", writer.add_unk_token_id),
    ):
        if v[role] is not None:
            add(v[role])
    writer.add_add_bos_token(v["add_bos"])
    if v["chat_template"]:
        writer.add_chat_template(v["chat_template"])


def _add_tensor(
    writer: GGUFWriter, name: str, p: torch.Tensor, qtype: Q, c: ModelConfig, permute_qk: bool
) -> str | None:
    """Write one parameter; return its GGUF name if it fell back to F16."""
    w = p.detach().float().numpy()
    heads = qk_heads(name, c) if permute_qk else None
    if heads:
        w = permute(w, heads)
    head = name == "lm_head.weight" or (c.tie_embeddings and name == "embed.weight")
    kind = Q.F32 if w.ndim == 1 else Q.Q8_0 if head and qtype in _FOUR_BIT else qtype
    fallback = kind not in (Q.F32, Q.F16) and w.shape[-1] % GGML_QUANT_SIZES[kind][0] != 0
    if fallback:
        kind = Q.F16
    data = quantize(np.ascontiguousarray(w), kind)
    writer.add_tensor(gguf_name(name), data, raw_dtype=None if kind in (Q.F32, Q.F16) else kind)
    return gguf_name(name) if fallback else None
