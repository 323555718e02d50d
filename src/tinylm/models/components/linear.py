"""The one mechanism that changes what a model's linear layers are: int4 weights, LoRA adapters, merging.

Quantisation and adapters both replace the `nn.Linear`s inside a model's blocks. `block_linears` lists
them by module name (a layer that already stands in for a linear, such as an adapter around one, counts as
one layer), and `convert_linears` swaps each for what a converter returns. The embedding and the LM head
are never touched: the head is usually tied to the embedding, which both conversions would alter.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


class LinearLike(nn.Module):
    """A module that stands where an `nn.Linear` stood (int4 weights, a LoRA adapter): a layer of its own."""


def blocks_by_name(model: nn.Module) -> dict[str, nn.Module]:
    """`model.blocks` by module name, in order. Names are where the blocks live in the model: `blocks` may be
    a view of lists held under other names (an encoder-decoder's "encoder_blocks.0", ...)."""
    where = {id(m): name for name, m in model.named_modules()}
    return {where[id(block)]: block for block in model.blocks}


def linears_of(module: nn.Module, prefix: str) -> dict[str, nn.Module]:
    """The linear layers inside `module`, named `prefix` + their path in it, in order."""
    found: dict[str, nn.Module] = {}

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Linear | LinearLike):
                found[prefix + name] = child
            else:
                walk(child, f"{prefix}{name}.")

    walk(module, prefix)
    return found


def block_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The linear layers of `model.blocks` by module name ("blocks.0.attn.q_proj"), in order."""
    found: dict[str, nn.Module] = {}
    for name, block in blocks_by_name(model).items():
        found.update(linears_of(block, name + "."))
    return found


def convert_linears(model: nn.Module, convert: Callable[[str, nn.Module], nn.Module | None]) -> list[str]:
    """Replace each block linear by `convert(name, layer)` (None keeps it); return the replaced names."""
    replaced = []
    for name, layer in block_linears(model).items():
        new = convert(name, layer)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
            replaced.append(name)
    return replaced
