"""The encoder-decoder of the T5 family, computing exactly what `transformers.T5ForConditionalGeneration` does.

One embedding table feeds both stacks. Each stack is pre-norm blocks with RMS norms (T5LayerNorm: no mean,
no bias) and unscaled attention (T5 folds 1/sqrt(d) into its initialisation); its first block holds the
relative position bias that every block of the stack adds to its self-attention scores (bidirectional in
the encoder, causal in the decoder; none in cross-attention). A tied head reads the decoder's states
scaled by d_model^-0.5.

`blocks` is the encoder's blocks followed by the decoder's (`encoder_blocks`, `decoder_blocks`): the units
of FSDP, activation checkpointing, int4 and LoRA, whose parameters keep the names of the two stacks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import TinyLMError
from ..base import Backbone
from ..components.attention import Attention, causal_mask, padding_mask
from ..components.mlp import MLPS
from ..components.norm import RMSNorm
from ..components.relative import RelativePositionBias
from ..config import ModelConfig
from .cache import T5Cache


def _additive(allowed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A boolean mask and a position bias as one float mask added to the scores."""
    return bias.masked_fill(~allowed, float("-inf"))


class Block(nn.Module):
    """x + attn(norm(x)) [+ cross_attn(norm(x), encoder)], then x + mlp(norm(x)); the first block of a
    stack owns its relative position bias and returns it for the others."""

    def __init__(self, c: ModelConfig, layer_idx: int, decoder: bool) -> None:
        super().__init__()
        attn = dict(n_kv_head=c.n_kv_head, dropout=c.dropout, scale=1.0)
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(c.d_model, c.n_head, layer_idx=layer_idx, **attn)
        self.position_bias = (
            RelativePositionBias(c.n_head, c.relative_buckets, c.relative_max_distance, not decoder)
            if layer_idx == 0
            else None
        )
        if decoder:
            self.cross_norm = RMSNorm(c.d_model, c.norm_eps)
            self.cross_attn = Attention(c.d_model, c.n_head, layer_idx=layer_idx, **attn)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = MLPS[c.mlp](c.d_model, c.d_ff, False)
        self.dropout = c.dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def forward(self, x, allowed, bias, past=0, cache=None, encoder=None):
        """`allowed` (B, 1, T, S) boolean self-attention mask, `bias` the stack's position bias (None in the
        first block); a decoder block attends to `encoder` = (states, mask), or to what `cache` holds of it.
        Cross-attention's keys and values are computed here, inside the block, so FSDP has gathered its
        weights."""
        if bias is None:
            bias = self.position_bias(x.shape[1], allowed.shape[-1], past)
        own = cache.self_attn if cache is not None else None
        x = x + self._drop(self.attn(self.attn_norm(x), _additive(allowed, bias), cache=own))
        if hasattr(self, "cross_attn"):
            x = x + self._drop(self._cross(self.cross_norm(x), cache, encoder))
        return x + self._drop(self.mlp(self.mlp_norm(x))), bias

    def _cross(self, h: torch.Tensor, cache: T5Cache | None, encoder) -> torch.Tensor:
        layer = self.attn.layer_idx
        if encoder is not None:
            states, mask = encoder
            kv = self.cross_attn.keys_values(states)
            if cache is not None:
                cache.store_encoder(layer, kv, mask)
        else:
            kv, mask = cache.encoder(layer)
        return self.cross_attn(h, padding_mask(mask), kv=kv)


class T5(Backbone):
    """Encoder-decoder LM: the prompt goes to the encoder, the decoder generates from `decoder_start_id`.

    `hidden(input_ids, attention_mask, decoder_input_ids=D)` encodes `input_ids` and returns the decoder's
    states over D (training, scoring). With a cache (`new_cache`), the first call encodes `input_ids` into
    the cache and returns the states at the start token; later calls take the next decoder tokens.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder_blocks = nn.ModuleList(Block(c, i, decoder=False) for i in range(c.n_layer))
        self.encoder_norm = RMSNorm(c.d_model, c.norm_eps)
        self.decoder_blocks = nn.ModuleList(Block(c, i, decoder=True) for i in range(c.n_decoder_layer))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @property
    def blocks(self) -> nn.ModuleList:
        """The encoder's blocks, then the decoder's (the same modules, viewed as one list)."""
        return nn.ModuleList([*self.encoder_blocks, *self.decoder_blocks])

    def _init_weights(self) -> None:
        """T5's initialisation (unscaled attention: the query's std carries 1/sqrt(head_dim)), times
        init_std / 0.02 so `init_std` scales it as it does other families."""
        f, d, kv = self.config.init_std / 0.02, self.config.d_model, self.config.head_dim
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            if name.endswith("q_proj.weight"):
                std = (d * kv) ** -0.5
            elif name.endswith("down_proj.weight"):
                std = self.config.d_ff**-0.5
            elif name.startswith(("encoder_blocks.", "decoder_blocks.", "lm_head.")):  # k v o, bias, MLP in
                std = d**-0.5  # an untied head too, as Mesh TensorFlow's T5 (logits of unit scale at start)
            else:  # the embedding
                std = 1.0
            nn.init.normal_(p, std=f * std)

    def new_cache(self, batch_size: int, capacity: int | None = None) -> T5Cache:
        c, w = self.config, self.embed.weight
        return T5Cache.empty(
            c.n_decoder_layer,
            batch_size,
            c.n_kv_head,
            c.head_dim,
            capacity or c.max_seq_len,
            w.dtype,
            w.device,
        )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's final states (B, S, d_model); `attention_mask` is 1 for real tokens."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        allowed = padding_mask(attention_mask)
        x, bias = self._drop(self.embed(input_ids)), None
        for block in self.encoder_blocks:
            x, bias = block(x, allowed, bias)
        return self._drop(self.encoder_norm(x))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.config.dropout, self.training) if self.config.dropout else x

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: T5Cache | None = None,
        prefix: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoder's final states, scaled by d_model^-0.5 when the head is tied (what the head reads).
        `position_ids` are ignored: T5's positions are relative."""
        if prefix is not None:
            raise TinyLMError("a t5 model reads its whole input with its encoder; a prefix is for prefix LMs")
        if cache is None:
            if decoder_input_ids is None:
                raise TinyLMError(
                    "a t5 model needs decoder_input_ids (or a cache) besides the encoder's input_ids"
                )
            return self._decode(decoder_input_ids, None, self._encoder(input_ids, attention_mask))
        if cache.encoded:
            return self._decode(input_ids, cache, None, attention_mask)
        start = input_ids.new_full((input_ids.shape[0], 1), self.config.decoder_start_id)
        return self._decode(start, cache, self._encoder(input_ids, attention_mask))

    def _encoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """(states, mask) of the encoded input, for the decoder's cross-attention."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return self.encode(input_ids, mask), mask

    def _decode(self, ids, cache, encoder, attention_mask=None) -> torch.Tensor:
        B, T = ids.shape
        past = cache.length if cache is not None else 0
        mask = attention_mask if attention_mask is not None else ids.new_ones(B, T)
        if cache is not None:
            mask = cache.self_attn.extend_mask(mask)
        allowed = causal_mask(mask, past, T)
        x, bias = self._drop(self.embed(ids)), None
        for block in self.decoder_blocks:
            x, bias = block(x, allowed, bias, past, cache, encoder)
        if cache is not None:
            cache.self_attn.advance(T)
        x = self._drop(self.norm(x))
        return x * self.config.d_model**-0.5 if self.config.tie_embeddings else x
