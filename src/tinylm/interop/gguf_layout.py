"""How llama.cpp lays a decoder out in a GGUF file, shared by `tinylm import gguf` and `tinylm export gguf`.

Tensor names ("blk.3.attn_q.weight" for our "blocks.3.attn.q_proj.weight"), the row order of Llama's q/k
projections, the pre-tokenizer behind each `tokenizer.ggml.pre` name and llama.cpp's token types. Import
and export each use one direction of the same tables, so a round trip cannot drift.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Regex, pre_tokenizers

from ..models import ModelConfig

ARCHITECTURES = ("llama", "qwen2")
"""Llama (SmolLM2, TinyLlama, ...) and Qwen2 (q/k/v biases, no q/k permutation in the file)."""

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
_OUR_TOP_LEVEL = {ours: theirs for theirs, ours in _TOP_LEVEL.items()}
_OUR_PER_LAYER = {ours: theirs for theirs, ours in _PER_LAYER.items()}

CONTROL, USER_DEFINED, UNUSED = 3, 4, 5
"""llama.cpp token types (1 is a normal token): special tokens, other added tokens, vocabulary padding."""


def our_name(name: str) -> str | None:
    """tinylm's name for a llama.cpp tensor name ("blk.3.attn_q.weight" -> "blocks.3.attn.q_proj.weight")."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _PER_LAYER:
        return f"blocks.{parts[1]}.{_PER_LAYER[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[parts[0]]}.{parts[1]}"
    return None


def gguf_name(name: str) -> str:
    """llama.cpp's name for one of our decoder's parameters; the inverse of `our_name`."""
    module, kind = name.rsplit(".", 1)
    if module in _OUR_TOP_LEVEL:
        return f"{_OUR_TOP_LEVEL[module]}.{kind}"
    _, layer, sub = module.split(".", 2)
    return f"blk.{layer}.{_OUR_PER_LAYER[sub]}.{kind}"


def qk_heads(name: str, config: ModelConfig) -> int | None:
    """The head count by which a Llama GGUF reorders this tensor's rows (q and k projections), else None."""
    module = name.split(".", 2)[-1].rsplit(".", 1)[0]
    return {"attn.q_proj": config.n_head, "attn.k_proj": config.n_kv_head}.get(module)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: each head's rows from rotate-half order (half, i) to interleaved (i, half).

    GGML rotates adjacent feature pairs while Hugging Face (and tinylm) rotate the two halves of each head,
    so llama.cpp's converter reorders the rows of q and k; `unpermute` is its inverse.
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo `permute`: back from interleaved rotary pairs to rotate-half order per head."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# How text is split before BPE, by `tokenizer.ggml.pre` (llama.cpp's name for the pre-tokenizer). Export
# writes the first name of each pre-tokenizer, the one llama.cpp knows; the others are aliases met in files.
_GPT2 = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {
    "gpt-2": _GPT2,
    # SmolLM / StarCoder: every digit on its own, then GPT-2's split.
    "smollm": [pre_tokenizers.Digits(individual_digits=True), *_GPT2],
    "llama-bpe": [
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ],
    "qwen2": [
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ],
    "default": _GPT2,
    "gpt2": _GPT2,
    "starcoder": [pre_tokenizers.Digits(individual_digits=True), *_GPT2],
}
