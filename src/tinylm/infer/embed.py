"""Sentence embeddings from any model's final hidden states: mean over the real tokens, then unit length.

This is what sentence-transformers computes for all-MiniLM-L6-v2 (`Pooling(mean)` + `Normalize`), so an
imported MiniLM gives its embeddings; it works on every `Backbone`, whose `hidden()` it reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import TinyLMError
from ..io import atomic_file
from ..models import load_model
from ..models.base import Backbone
from ..tokenizer import Tokenizer


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, d): the mean of `hidden` (B, T, d) over the positions where `attention_mask` (B, T) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed_texts(
    model: Backbone, tokenizer, texts: list[str], batch_size: int = 32, max_length: int | None = None
) -> torch.Tensor:
    """Unit-length embeddings (len(texts), d_model) of `texts`, each framed as the tokenizer frames a text
    ([CLS] ... [SEP] for BERT) and cut to `max_length` tokens (default: the model's context)."""
    model.eval()
    limit = min(max_length or model.config.max_seq_len, model.config.max_seq_len)
    out = []
    for start in range(0, len(texts), batch_size):
        rows = [tokenizer.encode(t, frame=True, max_length=limit) for t in texts[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows], device=model.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
        out.append(F.normalize(mean_pool(model.hidden(ids, attention_mask=mask).float(), mask), dim=-1))
    return torch.cat(out) if out else torch.empty(0, model.config.d_model)


def embed(
    model: Path,
    text: str | None = None,
    texts_file: Path | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    out: Path | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """Embed texts as unit vectors (mean-pooled final hidden states), one JSON line per text.

    Args:
        model: Checkpoint directory (an encoder such as an imported all-MiniLM-L6-v2, or any tinylm model).
        text: One text to embed.
        texts_file: A text file with one text per non-empty line.
        max_length: Cut each text to this many tokens (default: the model's context).
        batch_size: Texts encoded together.
        out: JSONL output file, {"text", "embedding"} per line (default: stdout).
        device: Torch device (cpu, cuda).
    """
    if (text is None) == (texts_file is None):
        raise TinyLMError("give exactly one of --text or --texts_file")
    if texts_file is not None and not Path(texts_file).is_file():
        raise TinyLMError(f"--texts_file {texts_file} does not exist")
    texts = (
        [text]
        if text is not None
        else [t for t in Path(texts_file).read_text("utf-8").splitlines() if t.strip()]
    )
    lm, tok = load_model(model, device=device), Tokenizer.load(model)
    vectors = embed_texts(lm, tok, texts, batch_size, max_length)
    lines = [
        json.dumps({"text": t, "embedding": v.tolist()}, ensure_ascii=False)
        for t, v in zip(texts, vectors, strict=True)
    ]
    if out is None:
        print("\n".join(lines))
    else:
        with atomic_file(out) as f:
            f.write("\n".join(lines) + "\n")
    return vectors
