"""tinylm's own CPU kernel: int4 weights times a few activation rows, compiled for this machine.

Decoding one sequence reads every weight once per token, and torch's CPU int4 kernel runs at about a fifth of
what memory allows: it widens each weight to float. `int4_gemv.cpp` multiplies in integers instead (AVX-512
VNNI, activations quantised to int8 per group as llama.cpp does), about three times faster per layer. It is
built with torch's extension tools (a C++ compiler and ninja) into torch's extension cache the first time it
is needed, so later processes load it at once; `python -m tinylm.models.kernels` (run by `make setup`) builds
it ahead. Where it cannot be built or the CPU lacks VNNI, or with TINYLM_KERNELS=0, `ops()` is None and int4
layers use torch's kernel.

The kernel reads its own layout, which `pack_int4` makes and `unpack_int4` reverses: for each tile of 16
output rows and each group of 32 inputs, 4 blocks of 64 bytes, byte (row, b) of block p holding
q[row, 4p + b] in its low nibble and q[row, 16 + 4p + b] in its high one (one `vpdpbusd` then multiplies
16 rows by 4 inputs), with the tile's scales and minimums per group beside it.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("int4_gemv.cpp")
GROUP = 32
"""Inputs per scale the kernel reads (Q4_1's block)."""
ROWS = 16
"""Output rows per tile: the kernel's output features must be a multiple of it."""


def ops():
    """The compiled ops (`torch.ops.tinylm_int4`), or None when TINYLM_KERNELS=0 or they are unbuildable or
    unsupported here. The setting is read at each call (so a benchmark can build layers both ways); the
    build happens once per process."""
    return None if os.environ.get("TINYLM_KERNELS", "1") == "0" else _build()


@functools.cache
def _build():
    try:
        from torch.utils.cpp_extension import load

        load(
            "tinylm_int4",
            [str(SOURCE)],
            extra_cflags=["-O3", "-march=native"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, a failed build: torch's kernel still works
        warnings.warn(f"tinylm's int4 kernel could not be built, using torch's: {e}", stacklevel=2)
        return None
    return torch.ops.tinylm_int4 if torch.ops.tinylm_int4.supported() else None


def pack_int4(
    q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's layout of integers q (out, in) in 0..15 with a scale and minimum (out, in // GROUP) per
    group: packed (tiles, groups, 256) uint8, scale and minimum (tiles, groups, ROWS) bfloat16."""
    out_features, in_features = q.shape
    tiles, groups = out_features // ROWS, in_features // GROUP
    # k = 16 * half + 4 * block + b within a group
    parts = q.to(torch.uint8).view(tiles, ROWS, groups, 2, 4, 4)
    packed = (parts[:, :, :, 0] | parts[:, :, :, 1] << 4).permute(0, 2, 3, 1, 4).reshape(tiles, groups, 256)

    def per_tile(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(tiles, ROWS, groups).transpose(1, 2).contiguous().to(torch.bfloat16)

    return packed.contiguous(), per_tile(scale), per_tile(minimum)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The integers (out, in) uint8 that `pack_int4` packed."""
    tiles, groups, _ = packed.shape
    blocks = packed.view(tiles, groups, 4, ROWS, 4)  # (tile, group, block, row, b)
    parts = torch.stack((blocks & 15, blocks >> 4), 2)  # (tile, group, half, block, row, b)
    return parts.permute(0, 4, 1, 2, 3, 5).reshape(tiles * ROWS, groups * GROUP)


def unpack_scales(t: torch.Tensor) -> torch.Tensor:
    """Per-group scales or minimums (out, in // GROUP) fp32 from the kernel's (tiles, groups, ROWS)."""
    return t.float().transpose(1, 2).reshape(-1, t.shape[1])
