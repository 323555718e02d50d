"""tinylm's own CPU kernels for inference, compiled for this machine the first time they are needed.

At batch 1 a decode step on a CPU is mostly fixed costs: torch's int4 and int8 kernels widen every weight
to float and run at a fraction of memory bandwidth, and RMSNorm and the rotary embedding are a dozen small
ops each. `int4_gemv.cpp` (the blocks) and `int8_gemv.cpp` (the LM head) multiply in integers (AVX-512
VNNI; each activation split into two int8 parts, `split.h`, finer than bf16), and `rope_norm.cpp` does
RMSNorm and the rotary embedding in one op each; `attention.cpp` attends a few new queries to the KV
cache in one op, each query on its own (so speculative verification needs no per-query loop); and
`llama_block.cpp` runs a whole int4 Llama block of a decode step as one op, calling the others from C++
(`ops.h`), so a step is 30 calls from Python instead of about 400.

They are built with torch's extension tools (a C++ compiler and ninja) into torch's extension cache, so
later processes load them at once; `python -m tinylm.models.kernels` (run by `make setup`) builds them
ahead. Where they cannot be built, or with TINYLM_KERNELS=0, `ops()` is None and the model runs on torch's
ops alone; `vnni()` also needs a CPU with AVX-512 VNNI. The build targets this CPU (-march=native):
machines of different CPUs sharing one home directory should each set their own TORCH_EXTENSIONS_DIR.

The int4 kernel reads its own layout, which `pack_int4` makes and `unpack_int4` reverses: for each tile of
16 output rows and each group of 32 inputs, 4 blocks of 64 bytes, byte (row, b) of block p holding
q[row, 4p + b] in its low nibble and q[row, 16 + 4p + b] in its high one (one `vpdpbusd` then multiplies
16 rows by 4 inputs), with the tile's scales and minimums per group beside it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SOURCES = [
    Path(__file__).with_name(name)
    for name in ("int4_gemv.cpp", "int8_gemv.cpp", "rope_norm.cpp", "attention.cpp", "llama_block.cpp")
]
GROUP = 32
"""Inputs per scale the kernel reads (Q4_1's block)."""
ROWS = 16
"""Output rows per tile: the kernel's output features must be a multiple of it."""


def ops():
    """The compiled ops (`torch.ops.tinylm`), or None when TINYLM_KERNELS=0 or they cannot be built. The
    setting is read at each call (so a benchmark can build a model both ways); the build happens once."""
    return None if os.environ.get("TINYLM_KERNELS", "1") == "0" else _build()


def vnni() -> bool:
    """Whether tinylm's integer matmuls (`int4_mm`, `int8_mm`) run here: built, on a CPU with AVX-512 VNNI."""
    return ops() is not None and torch.ops.tinylm.vnni_supported()


@functools.cache
def amx() -> bool:
    """Whether torch's bf16 matmuls run on AMX tiles here (oneDNN; about 6x its fp32 ones on the 2-core
    Xeon), so that a long prompt is faster as one bf16 matmul than through the integer kernel."""
    cpu = torch.cpu
    supported = getattr(cpu, "_is_amx_tile_supported", lambda: False)
    return bool(supported() and getattr(cpu, "_init_amx", lambda: False)())  # init: the OS grants the tiles


def inference(x: torch.Tensor) -> bool:
    """Whether `x` may take tinylm's fused ops: fp32 on the CPU, outside autograd, with the ops built."""
    return x.dtype == torch.float32 and x.is_cpu and not torch.is_grad_enabled() and ops() is not None


@contextmanager
def disabled() -> Iterator[None]:
    """Within it, `ops()` is None: layers built inside use torch's kernels (for side-by-side measurements)."""
    before = os.environ.get("TINYLM_KERNELS")
    os.environ["TINYLM_KERNELS"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TINYLM_KERNELS"]
        else:
            os.environ["TINYLM_KERNELS"] = before


@functools.cache
def _build():
    try:
        from torch.utils.cpp_extension import load

        load(
            "tinylm_cpu",
            [str(s) for s in SOURCES],
            # -fopenmp: without it ATen's parallel_for runs serially; the extension then shares torch's
            # OpenMP runtime (the same libgomp.so.1), so torch.set_num_threads governs it too
            extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # no compiler, no ninja, a failed build: torch's ops still work
        warnings.warn(f"tinylm's CPU kernels could not be built, using torch's ops: {e}", stacklevel=2)
        return None
    return torch.ops.tinylm


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
