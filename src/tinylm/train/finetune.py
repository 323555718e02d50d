"""Fine-tuning modes: which parameters of a pretrained model learn.

The field adapts a pretrained model in four common ways, which trade quality for memory and speed:

    full     every parameter learns (most memory: gradients and two AdamW moments for all of them)
    partial  only the last N blocks, the final norm and an untied LM head learn (the lower layers' features
             are kept, and the backward pass stops at the first block that learns)
    frozen   the token embeddings and / or the first N blocks are frozen, the rest learns
    lora     every original weight is frozen; low-rank adapters on chosen linear layers learn

`prepare_finetune` applies a mode by setting `requires_grad` (and, for LoRA, by inserting the adapters)
and reports what will learn. Tied embeddings are one tensor: training the head trains the embedding table,
and freezing the embeddings freezes the head. So partial mode leaves a tied head frozen: training it would
change the input embeddings too, and the backward pass would run through every block to reach them.
"""

from __future__ import annotations

from typing import Literal

from ..errors import TinyLMError
from ..models import Backbone
from ..models.lora import LoraConfig, apply_lora

Mode = Literal["full", "partial", "frozen", "lora"]


def prepare_finetune(
    model: Backbone,
    mode: Mode,
    last_blocks: int = 1,
    freeze_embeddings: bool = True,
    freeze_blocks: int = 0,
    lora: LoraConfig | None = None,
) -> list[str]:
    """Set `requires_grad` on `model` for `mode` (inserting adapters for LoRA); return the adapted layers'
    transformers-style names (LoRA) or [].

    last_blocks: partial mode trains this many last blocks (with the final norm, and the LM head if untied).
    freeze_embeddings, freeze_blocks: frozen mode freezes the embedding table and / or the first blocks.
    lora: the adapters of lora mode (default: rank 8 on the attention projections).
    """
    n_layer = len(model.blocks)
    targets: list[str] = []
    model.requires_grad_(mode == "full")
    if mode == "partial":
        if not 1 <= last_blocks <= n_layer:
            raise TinyLMError(f"last_blocks must be in [1, {n_layer}] for this model, got {last_blocks}")
        for module in [*model.blocks[n_layer - last_blocks :], model.norm]:
            module.requires_grad_(True)
        if not model.config.tie_embeddings:
            model.lm_head.requires_grad_(True)
    elif mode == "frozen":
        if not 0 <= freeze_blocks <= n_layer:
            raise TinyLMError(f"freeze_blocks must be in [0, {n_layer}] for this model, got {freeze_blocks}")
        if not freeze_embeddings and freeze_blocks == 0:
            raise TinyLMError("mode frozen freezes nothing: set freeze_embeddings true or freeze_blocks > 0")
        model.requires_grad_(True)
        model.blocks[:freeze_blocks].requires_grad_(False)
        if freeze_embeddings:
            model.embed.requires_grad_(False)
    elif mode == "lora":
        targets = apply_lora(model, lora or LoraConfig())
        for name, p in model.named_parameters():
            p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    elif mode != "full":
        raise TinyLMError(f"mode must be full, partial, frozen or lora, got {mode!r}")
    return targets
