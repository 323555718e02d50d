"""Bits per byte: next-token loss normalised by the text's UTF-8 size, so any two tokenizers compare fairly.

    bpb = (sum of next-token negative log-likelihoods over a split, in nats) / (ln 2 × UTF-8 bytes of the split)

A model with a big vocabulary predicts fewer, harder tokens than a character model; per-token loss hides
that, per-byte loss does not. We score the whole split in consecutive non-overlapping windows, never a
sample, so the number is exact and repeatable (see BENCHMARKS.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.shards import TokenShards, prepare_shards, sequential_windows
from ..errors import TinyLMError
from ..tokenizer import Tokenizer
from .bits import bits_per_byte


@torch.no_grad()
def split_nll(
    model: nn.Module, tokens, context: int, batch_size: int = 8, device: str | torch.device = "cpu"
) -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of predicted tokens) over every token of `tokens` but the first."""
    model.eval()
    total, count = 0.0, 0
    n_windows = max(1, (len(tokens) - 1) // context)
    with tqdm(total=n_windows, desc="bits per byte", unit="window", disable=None, leave=False) as bar:
        for x, y in sequential_windows(tokens, context, batch_size):
            logits = model(x.to(device))
            nll = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum")
            total += nll.item()
            count += y.numel()
            bar.update(len(x))
    return total, count


def shards_bpb(
    model: nn.Module,
    shards: TokenShards,
    split: str = "val",
    context: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Bits per byte of `model` on a whole split of `shards`, with the NLL per token and the sizes behind it."""
    context = context or model.config.max_seq_len
    check_context(context, model.config.max_seq_len)
    tokens, n_bytes = shards.split(split), shards.manifest["splits"][split]["bytes"]
    if len(tokens) < 2 or n_bytes == 0:
        raise TinyLMError(f"{shards.dir}: the {split!r} split is empty; nothing to score")
    nll, count = split_nll(model, tokens, context, batch_size, device)
    return {
        "bpb": bits_per_byte(nll, n_bytes),
        "nll_per_token": nll / count,
        "tokens": count,
        "bytes": n_bytes,
    }


def check_context(context: int, max_seq_len: int) -> None:
    if context > max_seq_len:
        raise TinyLMError(
            f"context {context} is longer than the model supports (model.max_seq_len={max_seq_len}); "
            f"use a context of at most {max_seq_len}"
        )
    if context < 1:
        raise TinyLMError(f"context must be positive, got {context}")


def eval_bpb(
    model: str,
    data: str,
    split: str = "val",
    context: int | None = None,
    batch_size: int = 8,
    val_fraction: float = 0.1,
    device: str = "cpu",
) -> dict[str, float]:
    """Score a checkpoint in bits per byte on a whole split of token shards or a corpus.

    Args:
        model: Model directory (model.safetensors, config.json and tokenizer files).
        data: Token shards directory made with the model's tokenizer, or a corpus (embedded name, file,
            glob or directory) that is tokenised on the fly and split as `tinylm data prepare` splits it.
        split: Which split to score: "val" or "train".
        context: Window length (default: the model's max_seq_len).
        batch_size: Windows per forward pass.
        val_fraction: Validation share when `data` is a corpus.
        device: "cpu", "cuda" or "cuda:N".
    """
    from ..models import load_model, require_generative

    tokenizer_dir, lm = model, load_model(model, device)
    require_generative(lm.config, "tinylm eval bpb (next-token bits per byte)")
    if (Path(data) / "manifest.json").is_file():
        shards = TokenShards.open(data)
        shards.check_tokenizer(Tokenizer.load(tokenizer_dir))
        result = shards_bpb(lm, shards, split, context, batch_size, device)
    else:
        with tempfile.TemporaryDirectory(prefix="tinylm-bpb-") as tmp:
            shards = prepare_shards(
                data, str(tokenizer_dir), str(Path(tmp) / "shards"), val_fraction, workers=1
            )
            result = shards_bpb(lm, shards, split, context, batch_size, device)
    print(
        f"{split} bits per byte: {result['bpb']:.4f} "
        f"({result['nll_per_token']:.4f} nats/token over {result['tokens']:,} tokens, {result['bytes']:,} bytes)"
    )
    return result
