"""A smaller model cut from a bigger one: its first N blocks with its embedding, final norm and LM head.

This "layer skip" model reads the same tokens and writes the same vocabulary as the model it came from,
so it is a free draft model for speculative decoding and the usual start for distilling one
(`tinylm distill --from_teacher_layers N`).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import TinyLMError
from .base import Backbone
from .registry import build_model, get_family


def first_layers(model: Backbone, n_layer: int) -> Backbone:
    """A new decoder-only model holding copies of `model`'s first `n_layer` blocks, embedding, norm and head."""
    config = model.config
    if get_family(config.family).objective != "clm":
        raise TinyLMError(
            f"only a decoder-only model can be cut to its first layers; this one is a {config.family} model"
        )
    if not 1 <= n_layer <= config.n_layer:
        raise TinyLMError(f"the first N layers of a {config.n_layer}-layer model: N must be in [1, "
                          f"{config.n_layer}], got {n_layer}")  # fmt: skip
    small = build_model(replace(config, n_layer=n_layer, n_decoder_layer=n_layer))
    wanted = small.state_dict()
    small.load_state_dict({k: v.clone() for k, v in model.state_dict().items() if k in wanted})
    return small.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype).eval()
