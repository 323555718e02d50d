"""The encoder-only masked language model of the BERT family (BERT, MiniLM, sentence encoders).

Word + learned absolute position + token-type embeddings, LayerNorm; post-LayerNorm blocks (bidirectional
self-attention over the real tokens, then a GELU MLP, each added to the residual stream and normalised);
an optional pooler (dense + tanh on the first token) and the MLM head (dense + GELU + LayerNorm, then a decoder
tied to the word embedding, with a bias). It computes what `transformers.BertForMaskedLM` computes.

`norm` is an Identity: post-LN normalises inside each block, so nothing stands between the last block
and the heads. With `norm_placement=pre` (and RoPE, SwiGLU, no biases: ModernBERT-like) the blocks are
pre-norm and `norm` is the final norm, as in a decoder. There is no decoding cache: an encoder sees the
whole text at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import TinyLMError
from ..base import Backbone, kept
from ..components.attention import Attention, padding_mask
from ..components.init import init_weights
from ..components.mlp import MLPS
from ..components.norm import make_norm
from ..components.rope import RotaryEmbedding
from ..config import ModelConfig
from ..registry import require_generative


class Block(nn.Module):
    """x = norm(x + attn(x)), then x = norm(x + mlp(x)) (post-LN, as in BERT); with pre-norm (ModernBERT)
    x = x + attn(norm(x)), then x = x + mlp(norm(x))."""

    def __init__(self, c: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = Attention(
            c.d_model, c.n_head, c.n_kv_head, c.attn_bias, c.attn_bias, c.dropout, layer_idx
        )
        self.attn_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.mlp = MLPS[c.mlp](c.d_model, c.d_ff, c.mlp_bias)
        self.mlp_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.post = c.norm_placement == "post"

    def forward(self, x, mask, rotary):
        if self.post:
            x = self.attn_norm(x + self.drop(self.attn(x, mask, causal=False, rotary=rotary)))
            return self.mlp_norm(x + self.drop(self.mlp(x)))
        x = x + self.drop(self.attn(self.attn_norm(x), mask, causal=False, rotary=rotary))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Pooler(nn.Module):
    """tanh(dense(first token)): BERT's sentence vector, for classification heads and next-sentence tasks."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


class MLMHead(nn.Module):
    """decoder(norm(gelu(transform(h)))): the masked-token logits; `decoder.weight` is the word embedding."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(c.d_model, c.d_model)
        self.approximate = "tanh" if c.mlp == "gelu" else "none"
        self.norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.decoder = nn.Linear(c.d_model, c.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.transform(h), approximate=self.approximate)))


class Bert(Backbone):
    """Bidirectional encoder: `hidden()` gives the last block's states, `forward()` the MLM logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        learned = c.position == "learned"
        self.position_embed = nn.Embedding(c.max_seq_len, c.d_model) if learned else None
        self.rotary = None if learned else RotaryEmbedding(c.head_dim, c.rope_theta, c.rope_scaling)
        self.type_embed = nn.Embedding(c.type_vocab_size, c.d_model) if c.type_vocab_size else None
        self.embed_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.embed_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c, i) for i in range(c.n_layer))
        post = c.norm_placement == "post"
        self.norm = nn.Identity() if post else make_norm(c.norm, c.d_model, c.norm_eps)
        self.pooler = Pooler(c.d_model) if c.pooler else None
        self.lm_head = MLMHead(c)
        init_weights(self, c.init_std, c.n_layer, residual=())
        if c.tie_embeddings:
            self.lm_head.decoder.weight = self.embed.weight

    def new_cache(self, batch_size: int, capacity: int | None = None):
        require_generative(self.config, "generation")

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        prefix: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last block's states (B, T, d_model); `token_type_ids` (B, T) default to 0 (sentence A)."""
        if cache is not None:
            require_generative(self.config, "incremental decoding")
        if prefix is not None:
            raise TinyLMError(
                "a prefix was given to an encoder, which reads every position both ways already"
            )
        B, T = input_ids.shape
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.embed(input_ids)
        if self.position_embed is not None:
            x = x + self.position_embed(position_ids)
        if self.type_embed is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.type_embed(types)
        x = self.embed_drop(self.embed_norm(x))
        rotary = self.rotary(position_ids) if self.rotary is not None else None
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        for block in self.blocks:
            x = block(x, mask, rotary)
        return self.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        keep: int | torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MLM logits at every position, or only at the kept ones (see `Backbone.forward`)."""
        h = self.hidden(input_ids, attention_mask, position_ids, cache, prefix, token_type_ids)
        return self.lm_head(kept(h, keep))

    def pooled(self, h: torch.Tensor) -> torch.Tensor:
        """The pooler's output (B, d_model) for hidden states `h` (a model built with `pooler`)."""
        if self.pooler is None:
            raise TinyLMError("this bert model has no pooler (model.pooler=false)")
        return self.pooler(h)
