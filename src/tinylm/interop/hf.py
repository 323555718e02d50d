"""Hugging Face directories (safetensors + config.json + tokenizer files) in and out of tinylm.

`load_model` already reads a transformers directory of a supported model type, and `save_model` writes one,
so import normalises a directory (shards merged, dtype chosen, config checked against our model)
and export checks that the model has a transformers twin before writing it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TinyLMError
from ..models import get_family, load_model, save_model
from ..models.checkpoint import DType, parse_dtype
from . import output_dir


def import_hf(src: str, out: str | None = None, dtype: DType = "float32", overwrite: bool = False) -> Path:
    """Import a Hugging Face model directory (Llama / SmolLM2 / Qwen2 / BERT / MiniLM / T5) as a tinylm checkpoint.

    Args:
        src: Directory with config.json, model.safetensors (or shards with an index) and tokenizer files.
        out: Checkpoint directory to write.
        dtype: Weight dtype to store: float32, bfloat16 or float16.
        overwrite: Replace `out` if it exists.
    """
    src_dir, out_dir = Path(src), output_dir(out, overwrite)
    if not (src_dir / "tokenizer.json").is_file():
        raise TinyLMError(f"{src_dir} has no tokenizer.json; a model is imported together with its tokenizer")
    with torch.random.fork_rng(devices=[]):  # a head the source lacks starts the same on every import
        torch.manual_seed(0)
        model = load_model(src_dir, dtype=parse_dtype(dtype))
    save_model(model, out_dir, tokenizer_dir=src_dir)
    print(f"imported {src_dir} -> {out_dir} ({model.num_params():,} parameters, {dtype})")
    return out_dir


def export_hf(ckpt: str, out: str | None = None, dtype: DType = "float32", overwrite: bool = False) -> Path:
    """Export a tinylm checkpoint as a directory that transformers loads (AutoModelForCausalLM, AutoModelForMaskedLM or T5ForConditionalGeneration).

    Args:
        ckpt: tinylm checkpoint directory.
        out: Directory to write.
        dtype: Weight dtype to store: float32, bfloat16 or float16.
        overwrite: Replace `out` if it exists.
    """
    ckpt_dir, out_dir = Path(ckpt), output_dir(out, overwrite)
    model = load_model(ckpt_dir, dtype=parse_dtype(dtype))
    arch = get_family(model.config.family).hf_architecture(model.config)
    has_tokenizer = (ckpt_dir / "tokenizer.json").is_file()
    save_model(model, out_dir, tokenizer_dir=ckpt_dir if has_tokenizer else None)
    print(f"exported {ckpt_dir} -> {out_dir} as {arch}" + ("" if has_tokenizer else " (no tokenizer files)"))
    return out_dir
