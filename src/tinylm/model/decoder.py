"""The decoder-only language model (GPT / Llama family) built from `layers`."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache
from .layers import Block, RotaryEmbedding, init_weights, make_norm


class TinyLM(nn.Module):
    """Causal language model: token embedding, pre-norm blocks with rotary attention, final norm, LM head.

    `hidden()` returns the final normalised hidden states (reward and value heads read them);
    `forward()` adds the LM head and returns next-token logits.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.rotary = RotaryEmbedding(config)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` (default: the model's context)."""
        c, p = self.config, self.embed_tokens.weight
        return KVCache(
            c.n_layer, batch_size, c.n_kv_head, c.head_dim, max_len or c.max_seq_len, p.device, p.dtype
        )

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, d_model).

        attention_mask: (B, T) with 1 for real tokens and 0 for padding (left padding for generation).
        With a cache, input_ids are the next T tokens after the cached ones.
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        mask = attention_mask
        if cache is not None:
            new = attention_mask if attention_mask is not None else input_ids.new_ones(B, T)
            mask = cache.extend_mask(new)
        if position_ids is None:
            if mask is not None:
                position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = self.rotary(position_ids)
        sdpa_mask = None if mask is None and cache is None else _causal_padding_mask(mask, past, T)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, sdpa_mask, cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, T, vocab_size)."""
        return self.lm_head(self.hidden(input_ids, attention_mask, position_ids, cache))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (shared tensors once); non_embedding drops the token embedding table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if non_embedding else n


def _causal_padding_mask(mask: torch.Tensor | None, past: int, T: int) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, T, past+T): query i sees keys up to past+i that are not padding.

    Each query may always see itself, so a padding query's row is never empty (which would give NaN).
    """
    device = mask.device if mask is not None else None
    q = torch.arange(T, device=device).unsqueeze(1) + past
    k = torch.arange(past + T, device=device).unsqueeze(0)
    allowed = (k <= q)[None, None]
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    return allowed | (k == q)[None, None]
