"""Weight-only int4 quantization, for fast decoding on CPU.

Decoding one sequence reads every weight once per token, so on a CPU its speed is set by memory bandwidth,
not arithmetic: fp32 SmolLM2-135M moves 538 MB per token, about 16 tokens/s on the 2-core machine. Storing
the blocks' linear weights as 4-bit integers moves an eighth of those bytes.

The format is GGUF's Q4_1: each group of 32 input weights of an output row is `scale * q + minimum` with q
in 0..15. Quantizing takes each group's minimum and `(max - min) / 15`. On a checkpoint imported from a Q4_1
GGUF this is lossless — a group's smallest and largest weights are exactly its q = 0 and q = 15 values — so
`quantize_int4` recovers the integers the file shipped, and `Int4Report.max_error` says so (0.0).

Where this CPU can build it, tinylm's own kernel computes the layers (`tinylm.models.kernels`: integer
dot products over activations split into two int8 parts per group of 32), else torch's CPU int4 kernel,
which rounds the activations to bfloat16. Scales and minimums are held in bfloat16 either way; a layer's
output is fp32. Where torch packs tiles of 32 rows (CPUs without AVX-512), its kernel reads the weights
again for every input row, so a prefill of hundreds of tokens would cost hundreds of decode steps; from
`DENSE_ROWS` rows on, such a layer unpacks its weight to fp32 for the one call and runs a dense matmul,
which reuses each weight across rows (1.4x faster for a 256-token prompt there). Torch's AVX-512 kernel
(tiles of 64) and tinylm's reuse them already and are twice as fast as that dense fp32 matmul; but on a CPU
with AMX tiles, torch's bf16 matmul is faster still, so there tinylm's layers unpack the weight to bf16
(`int4_to_bf16`) for a prompt of `DENSE_ROWS` rows or more: 1.5-2x for 256 rows, 3-4x for 1024 on the
2-core Xeon, with activations rounded to bf16 as torch's int4 kernel rounds them.

Two more changes make a decode step cheaper, both for decoding only: the layers that read the same input
are fused into one matmul (q/k/v, gate/up; Q4_1 quantizes each output row on its own, so the integers stay
the same), and the LM head gets its own int8 copy of its weight (`Int8Linear`) while the embedding keeps
its table. Tied to the fp32 embedding, the head alone would read 113 MB per SmolLM2 token, more than all the
int4 blocks; int4 would be too coarse for it (an eighth of SmolLM2's greedy tokens change), int8 with one
scale per row changes about 2% of them, as llama.cpp's Q8_0 head does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TinyLMError
from . import kernels
from .components.attention import Attention
from .components.linear import LinearLike, blocks_by_name, linears_of
from .components.mlp import SwiGLU

GROUP_SIZE = 32
"""Input weights sharing one scale and zero: Q4_1's block size, and one of the kernel's sizes (32..256)."""
_ROWS_MULTIPLE = 16  # the kernel packs output rows in tiles of 16
DENSE_ROWS = 128
"""Input rows from which an `Int4Linear` unpacks its weight for one dense matmul (see the module doc): to fp32
on torch's kernel in tiles of 32, to bf16 on tinylm's where the CPU has AMX; below it the kernels are faster."""


@dataclass
class Int4Weights:
    """A weight matrix (out, in) as integers 0..15 with a float scale and minimum per group of inputs."""

    q: torch.Tensor  # (out, in) int32
    scale: torch.Tensor  # (out, in // group) fp32
    minimum: torch.Tensor  # (out, in // group) fp32

    @classmethod
    def quantize(cls, weight: torch.Tensor, group_size: int = GROUP_SIZE) -> Int4Weights:
        out_features, in_features = weight.shape
        groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        minimum, maximum = groups.amin(-1), groups.amax(-1)
        # A constant group has range 0: any positive scale represents it exactly with q = 0.
        scale = ((maximum - minimum) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        # in place after the first copy: quantising while loading holds only a few copies of one layer
        q = (groups - minimum[..., None]).div_(scale[..., None]).round_().clamp_(0, 15).to(torch.int32)
        return cls(q.reshape(out_features, in_features), scale, minimum)

    def dequantize(self) -> torch.Tensor:
        out_features, in_features = self.q.shape
        groups = self.q.reshape(out_features, self.scale.shape[1], -1).float()
        return (
            groups.mul_(self.scale[..., None])
            .add_(self.minimum[..., None])
            .reshape(out_features, in_features)
        )


def _unpack_int4(packed: torch.Tensor, out_features: int, in_features: int, tile: int) -> torch.Tensor:
    """The integers (out, in) uint8 of torch's CPU int4 packing: per tile of `tile` output rows and per
    input, tile/2 bytes whose low nibbles hold the tile's first half of rows and high nibbles the second."""
    tiles = packed.view(out_features // tile, in_features, tile // 2)
    q = torch.stack((tiles & 15, tiles >> 4), 2).view(out_features // tile, in_features, tile)
    return q.transpose(1, 2).reshape(out_features, in_features)


@functools.cache
def pack_tile() -> int:
    """Output rows per tile of this machine's int4 packing (torch packs 64 with AVX-512, 32 without), read
    off a random matrix; 0 if it is neither layout (then only torch's kernel reads the packed weights)."""
    for tile in (32, 64):
        q = torch.randint(0, 16, (2 * tile, 2 * GROUP_SIZE), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        if packed.shape == (q.shape[0], q.shape[1] // 2) and torch.equal(
            _unpack_int4(packed, *q.shape, tile).int(), q
        ):
            return tile
    return 0


class Int4Linear(LinearLike):
    """A linear layer whose weight is packed int4 (inference only).

    With tinylm's own kernel (`tinylm.models.kernels`) the weight is held in that kernel's layout, with its
    scales and minimums; without it, in torch's CPU int4 packing with (scale, zero) pairs."""

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weights.q.shape
        self.group_size = self.in_features // weights.scale.shape[1]
        self.own = (
            kernels.vnni() and self.group_size == kernels.GROUP and self.out_features % kernels.ROWS == 0
        )
        """Whether tinylm's own kernel computes this layer (else torch's)."""
        self.tile = 0
        """Rows per tile of torch's packing when tinylm can unpack it; 0 if it cannot (or `own`)."""
        if self.own:
            packed, scale, minimum = kernels.pack_int4(weights.q, weights.scale, weights.minimum)
            self.register_buffer("packed", packed)
            self.register_buffer("scale", scale)
            self.register_buffer("minimum", minimum)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(weights.q, 1)
            # Torch computes (q - 8) * scale + zero, so Q4_1's minimum becomes zero = minimum + 8 * scale.
            zero = weights.minimum + 8 * weights.scale
            scales_and_zeros = torch.stack((weights.scale, zero), -1).transpose(0, 1).contiguous()
            self.register_buffer("packed", packed)
            self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))
            self.tile = pack_tile() if pack_tile() and self.out_features % pack_tile() == 0 else 0
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    @staticmethod
    def fits(layer: nn.Linear, group_size: int = GROUP_SIZE) -> bool:
        """Whether the kernel can hold `layer`'s shape."""
        return layer.in_features % group_size == 0 and layer.out_features % _ROWS_MULTIPLE == 0

    @property
    def nbytes(self) -> int:
        """Bytes of the packed weight with its scales."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def kernel_weights(self) -> list[torch.Tensor] | None:
        """[packed, scale, minimum] of tinylm's own kernel, for ops that call it from C++; None on torch's."""
        if not self.own:
            return None
        buffers = self._buffers  # not nn.Module.__getattr__: this runs for every layer of every decode step
        return [buffers["packed"], buffers["scale"], buffers["minimum"]]

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight (out, in) the kernel computes with, per group: scale * q + minimum (own kernel),
        or torch's (q - 8) * scale + zero."""
        shape = (self.out_features, -1, self.group_size)
        if self.own:
            q = kernels.unpack_int4(self.packed).view(shape).float()
            scale, minimum = kernels.unpack_scales(self.scale), kernels.unpack_scales(self.minimum)
            return q.mul_(scale[..., None]).add_(minimum[..., None]).view(self.out_features, self.in_features)
        if not self.tile:
            raise TinyLMError("this torch packs int4 weights in a layout tinylm cannot unpack")
        q = _unpack_int4(self.packed, self.out_features, self.in_features, self.tile)
        scale, zero = self.scales_and_zeros.float().transpose(0, 1).unsqueeze(-1).unbind(-2)
        groups = q.view(shape).float()
        return groups.sub_(8).mul_(scale).add_(zero).view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise TinyLMError("int4 weights run on the CPU only; load the model without --quantize on a GPU")
        rows = x.reshape(-1, self.in_features)
        if self.own and len(rows) >= DENSE_ROWS and kernels.amx():  # a long prompt: one bf16 matmul on AMX
            w = torch.ops.tinylm.int4_to_bf16(self.packed, self.scale, self.minimum)
            y = torch.nn.functional.linear(x.to(torch.bfloat16), w).to(x.dtype)
            return y if self.bias is None else y + self.bias
        if self.own:  # one call, the bias included: each op more costs a few microseconds per layer
            return torch.ops.tinylm.int4_mm(x.float(), self.packed, self.scale, self.minimum, self.bias).to(
                x.dtype
            )
        if len(rows) >= DENSE_ROWS and self.tile == 32:
            y = torch.nn.functional.linear(rows.float(), self.dequantize())
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                rows.to(torch.bfloat16), self.packed, self.group_size, self.scales_and_zeros
            )
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
        )


class Int8Linear(LinearLike):
    """A linear layer whose weight is int8 with one scale per output row (inference only): the LM head.

    tinylm's own kernel computes it where this CPU has one (`tinylm.models.kernels.vnni`), else torch's
    CPU int8 kernel, which is vectorised for bfloat16 activations, so the input is rounded to bfloat16."""

    ROWS = 4096
    """Rows quantised at a time: a 49152-row head in one go would hold several fp32 copies of 113 MB."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("q", torch.empty(weight.shape, dtype=torch.int8))
        self.register_buffer("scale", torch.empty(self.out_features, dtype=torch.bfloat16))
        for start in range(0, self.out_features, self.ROWS):
            w = weight.detach()[start : start + self.ROWS].to(torch.float32, copy=True)  # div_ below
            scale = (w.abs().amax(1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(torch.bfloat16)
            self.q[start : start + self.ROWS] = w.div_(scale.float()[:, None]).round_().clamp_(-127, 127)
            self.scale[start : start + self.ROWS] = scale
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)
        self.own = kernels.vnni() and self.in_features % 64 == 0
        """Whether tinylm's own kernel computes this layer (else torch's)."""

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]

    def max_error(self, weight: torch.Tensor) -> float:
        """Largest |dequantized - `weight`|, a block of rows at a time."""
        return max(
            (self.q[i : i + self.ROWS].float() * self.scale[i : i + self.ROWS].float()[:, None])
            .sub_(weight.detach()[i : i + self.ROWS])
            .abs_()
            .max()
            .item()
            for i in range(0, self.out_features, self.ROWS)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise TinyLMError("int8 weights run on the CPU only; load the model without --quantize on a GPU")
        if self.own:
            y = torch.ops.tinylm.int8_mm(x.float(), self.q, self.scale).to(x.dtype)
        else:
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(rows, self.q, self.scale)
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _fuse(layers: list[nn.Linear]) -> nn.Linear:
    """One linear layer computing the outputs of `layers` (same input) side by side."""
    bias = layers[0].bias is not None  # built on meta: no weights to allocate and initialise, only to replace
    fused = nn.Linear(layers[0].in_features, sum(m.out_features for m in layers), bias, device="meta")
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([m.weight for m in layers]), requires_grad=False)
        if bias:
            fused.bias = nn.Parameter(torch.cat([m.bias for m in layers]), requires_grad=False)
    return fused


def fuse_projections(block: nn.Module, group_size: int = GROUP_SIZE) -> int:
    """Fuse the block's q/k/v (self-attention) and gate/up (SwiGLU) linears, where int4 can hold every part.

    Decoding one token is dominated by the fixed cost of each small matmul, so three and two layers that
    read the same input become one each. Returns how many layers were fused away."""
    groups = []
    if isinstance(getattr(block, "attn", None), Attention):
        groups.append((block.attn, "qkv_proj", ("q_proj", "k_proj", "v_proj")))
    if isinstance(getattr(block, "mlp", None), SwiGLU):
        groups.append((block.mlp, "gate_up_proj", ("gate_proj", "up_proj")))
    removed = 0
    for module, fused_name, names in groups:
        parts = [getattr(module, n) for n in names]
        if not all(type(m) is nn.Linear and Int4Linear.fits(m, group_size) for m in parts):
            continue
        if len({m.in_features for m in parts}) != 1 or len({m.bias is None for m in parts}) != 1:
            continue
        setattr(module, fused_name, _fuse(parts))
        for n in names:
            delattr(module, n)
        removed += len(parts) - 1
    return removed


def quantize_head(model: nn.Module) -> tuple[int, float]:
    """Give the model's LM head its own int8 weight (`Int8Linear`); the embedding keeps its table.

    Returns (bytes of the int8 weight, largest |dequantized - original|)."""
    head = model.lm_head
    if not isinstance(head, nn.Linear):
        return 0, 0.0
    model.lm_head = Int8Linear(head.weight, head.bias)
    error = model.lm_head.max_error(head.weight)
    return model.lm_head.q.numel() + model.lm_head.scale.numel() * 2, error


@dataclass
class Int4Report:
    """What `quantize_int4` did: layers converted and kept, bytes of their weights, worst rounding error."""

    quantized: int
    kept: list[str]
    fp32_bytes: int
    int4_bytes: int
    max_error: float
    """Largest |dequantized - original| over all quantized weights: 0.0 when the model came from Q4_1."""
    fused: int = 0
    """Layers merged into another that reads the same input (q/k/v, gate/up), before quantizing."""
    head_bytes: int = 0
    """Bytes of the LM head's int8 weight (0: the head was left as it was)."""
    head_max_error: float = 0.0
    """Largest |dequantized - original| of the LM head's weight."""

    def __str__(self) -> str:
        kept = (
            f"; kept in full precision (shape not a multiple of the kernel's tiles): {', '.join(self.kept)}"
        )
        head = f"; LM head int8 ({self.head_bytes / 2**20:.0f} MiB, largest rounding error {self.head_max_error:.3g})"
        return (
            f"int4 weights: {self.quantized} linear layers ({self.fused} more fused into them), "
            f"{self.fp32_bytes / 2**20:.0f} MiB -> {self.int4_bytes / 2**20:.0f} MiB, largest rounding error "
            f"{self.max_error:.3g}{' (lossless)' if self.max_error == 0 else ''}"
            f"{head if self.head_bytes else ''}{kept if self.kept else ''}"
        )


class Int4Quantizer:
    """Turns blocks to int4 one at a time, adding what it did to `self.report`.

    Called on each block (`quantizer(name, block)`): fuses the linears that share an input, then replaces
    every block linear the kernel can hold by `Int4Linear`. `finish(model)` then gives the LM head its int8
    weight. `quantize_int4` runs it over a loaded model; `load_model(..., convert=Int4Quantizer())` runs it
    on each block as soon as that block's weights are read, so the full-precision blocks never exist at once.
    """

    def __init__(self, group_size: int = GROUP_SIZE) -> None:
        self.group_size = group_size
        self.report = Int4Report(0, [], 0, 0, 0.0)

    def __call__(self, name: str, block: nn.Module) -> None:
        self.report.fused += fuse_projections(block, self.group_size)
        for layer_name, layer in linears_of(block, f"{name}.").items():
            quantized = self._to_int4(layer_name, layer)
            if quantized is not None:
                parent, _, attr = layer_name.removeprefix(f"{name}.").rpartition(".")
                setattr(block.get_submodule(parent), attr, quantized)

    def finish(self, model: nn.Module) -> Int4Report:
        self.report.head_bytes, self.report.head_max_error = quantize_head(model)
        return self.report

    def _to_int4(self, name: str, layer: nn.Module) -> nn.Module | None:
        report = self.report
        if not isinstance(layer, nn.Linear) or not Int4Linear.fits(layer, self.group_size):
            report.kept.append(name)
            return None
        weights = Int4Weights.quantize(layer.weight, self.group_size)
        error = weights.dequantize().sub_(layer.weight).abs_().max().item()
        report.max_error = max(report.max_error, error)
        report.quantized += 1
        report.fp32_bytes += layer.weight.numel() * 4
        quantized = Int4Linear(weights, layer.bias)
        report.int4_bytes += quantized.nbytes
        return quantized


def quantize_int4(model: nn.Module, group_size: int = GROUP_SIZE) -> Int4Report:
    """Replace the linear layers of the model's blocks by `Int4Linear` (fusing those that share an input),
    and the LM head by an `Int8Linear`, in place. The embedding keeps its table.
    """
    quantizer = Int4Quantizer(group_size)
    for name, block in blocks_by_name(model).items():
        quantizer(name, block)
    return quantizer.finish(model)
