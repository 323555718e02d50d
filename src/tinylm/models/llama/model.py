"""The decoder-only language model of the GPT / Llama family.

Token embedding, pre-norm blocks (rotary self-attention with grouped-query heads, then a SwiGLU or GELU
MLP, each added to the residual stream), final norm, LM head tied to the embedding or not. With biases on
q/k/v it is Qwen2; with LayerNorm and GELU it is GPT-2 shaped; with `prefix_lm` it is a prefix LM (UniLM),
attending bidirectionally over a prefix and causally after it.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import TinyLMError
from ..base import Backbone
from ..components.attention import Attention, causal_mask
from ..components.cache import KVCache
from ..components.init import init_weights
from ..components.mlp import MLPS, SwiGLU
from ..components.norm import RMSNorm, make_norm
from ..components.rope import RotaryEmbedding
from ..config import ModelConfig
from ..quant import Int4Linear


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, c: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.attn = Attention(c.d_model, c.n_head, c.n_kv_head, c.attn_bias, False, c.dropout, layer_idx)
        self.mlp_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.mlp = MLPS[c.mlp](c.d_model, c.d_ff, c.mlp_bias)

    def forward(self, x, rotary, mask, cache):
        args = self._kernel_args(x, rotary, mask, cache)
        if args is not None:  # the whole block in one op (`tinylm.models.kernels`): a decode step
            return torch.ops.tinylm.llama_block(*args)
        x = x + self.attn(self.attn_norm(x), mask, rotary=rotary, cache=cache)
        return x + self.mlp(self.mlp_norm(x))

    def _kernel_args(self, x, rotary, mask, cache) -> tuple | None:
        """The arguments of `llama_block`, when it can compute this call: a few new tokens against the cache
        at inference, RMSNorm, SwiGLU and int4 linears on tinylm's own kernel (q/k/v and gate/up fused, no
        other biases), as `quantize="int4"` leaves a Llama on an AVX-512 VNNI CPU; else None.

        Submodules are read from `_modules`: `nn.Module.__getattr__` costs about half a microsecond a lookup,
        which at some 20 per block came to a tenth of a SmolLM2 decode step."""
        attn, mlp = self._modules["attn"], self._modules["mlp"]
        norms = (self._modules["attn_norm"], self._modules["mlp_norm"])
        if (
            rotary is None
            or self.training
            or attn.scale is not None
            or type(mlp) is not SwiGLU
            or not all(isinstance(n, RMSNorm) and n.eps == norms[0].eps for n in norms)
            or not attn.cached_kernel(
                x.shape[1], x, mask, cache, None, True
            )  # the block attends with that op
        ):
            return None
        qkv, o = attn._modules.get("qkv_proj"), attn._modules["o_proj"]  # (unfused: no qkv_proj)
        linears = (qkv, o, mlp._modules.get("gate_up_proj"), mlp._modules["down_proj"])
        if not all(isinstance(m, Int4Linear) and m.own for m in linears):
            return None
        if any(m.bias is not None for m in linears[1:]):
            return None
        weights = [norms[0]._parameters["weight"], *qkv.kernel_weights(), *o.kernel_weights()]
        weights += [
            norms[1]._parameters["weight"],
            *linears[2].kernel_weights(),
            *linears[3].kernel_weights(),
        ]
        keys, values = cache.keys[attn.layer_idx], cache.values[attn.layer_idx]
        heads, scale = (attn.n_head, attn.n_kv_head), attn.head_dim**-0.5
        return (x, weights, qkv.bias, *rotary, keys, values, cache.length, mask, *heads, norms[0].eps, scale)


class Llama(Backbone):
    """Causal language model: `hidden()` gives the final normalised states, `forward()` adds the LM head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if (
            config.position != "rope"
            or config.type_vocab_size
            or config.pooler
            or config.norm_placement != "pre"
        ):
            raise TinyLMError(
                "the llama family has rotary positions, pre-norm blocks, no token types and no pooler; got "
                f"model.position={config.position}, model.norm_placement={config.norm_placement}, "
                f"model.type_vocab_size={config.type_vocab_size}, model.pooler={config.pooler}"
            )
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config.init_std, config.n_layer, residual=("o_proj.weight", "down_proj.weight"))
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @property
    def chunked_prefill(self) -> bool:
        return not self.config.prefix_lm

    def new_cache(self, batch_size: int, capacity: int | None = None) -> KVCache:
        c = self.config
        w = self.embed.weight
        return KVCache.empty(
            c.n_layer, batch_size, c.n_kv_head, c.head_dim, capacity or c.max_seq_len, w.dtype, w.device
        )

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        mask = attention_mask
        if cache is not None:
            mask = cache.extend_mask(
                attention_mask if attention_mask is not None else input_ids.new_ones(B, T)
            )
        if position_ids is None:
            if mask is not None:
                position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        rotary = self.rotary(position_ids)
        if prefix is None and self.config.prefix_lm and past == 0 and cache is not None:
            prefix = input_ids.new_full((B,), T)  # generation: the (left-padded) prompt is the prefix
        if prefix is not None and not self.config.prefix_lm:
            raise TinyLMError(
                "a prefix was given to a causal model; set model.prefix_lm to train a prefix LM"
            )
        # Without padding, a first pass is plain causal attention, whose kernel skips the masked half. Only a
        # prefill checks its mask for padding: in training that check would stall a GPU at every forward.
        unpadded = mask is None or (cache is not None and bool(mask.all()))
        plain = prefix is None and past == 0 and unpadded
        sdpa_mask = None if plain else causal_mask(mask, past, T, prefix)
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, rotary, sdpa_mask, cache)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)
