"""Weight-only int4 quantization, for fast decoding on CPU.

Decoding one sequence reads every weight once per token, so on a CPU its speed is set by memory bandwidth,
not arithmetic: fp32 SmolLM2-135M moves 538 MB per token, about 16 tokens/s on the 2-core machine. Storing
the blocks' linear weights as 4-bit integers moves an eighth of those bytes.

The format is GGUF's Q4_1: each group of 32 input weights of an output row is `scale * q + minimum` with q
in 0..15. Quantizing takes each group's minimum and `(max - min) / 15`. On a checkpoint imported from a Q4_1
GGUF this is lossless — a group's smallest and largest weights are exactly its q = 0 and q = 15 values — so
`quantize_int4` recovers the integers the file shipped, and `Int4Report.max_error` says so (0.0).

Torch's CPU int4 kernel is vectorised for bfloat16 activations only, so the input of each quantized layer is
rounded to bfloat16 and its scales and zeros are held in bfloat16; the layer's output returns in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TinyLMError
from .components.linear import LinearLike, convert_linears

GROUP_SIZE = 32
"""Input weights sharing one scale and zero: Q4_1's block size, and one of the kernel's sizes (32..256)."""
_ROWS_MULTIPLE = 16  # the kernel packs output rows in tiles of 16


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
        q = ((groups - minimum[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
        return cls(q.reshape(out_features, in_features), scale, minimum)

    def dequantize(self) -> torch.Tensor:
        out_features, in_features = self.q.shape
        groups = self.q.reshape(out_features, self.scale.shape[1], -1).float()
        return (groups * self.scale[..., None] + self.minimum[..., None]).reshape(out_features, in_features)


class Int4Linear(LinearLike):
    """A linear layer whose weight is packed int4 (inference only)."""

    def __init__(self, weights: Int4Weights, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weights.q.shape
        self.group_size = self.in_features // weights.scale.shape[1]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(weights.q, 1)
        # The kernel computes (q - 8) * scale + zero, so Q4_1's minimum becomes zero = minimum + 8 * scale.
        zero = weights.minimum + 8 * weights.scale
        scales_and_zeros = torch.stack((weights.scale, zero), -1).transpose(0, 1).contiguous()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    @staticmethod
    def fits(layer: nn.Linear, group_size: int = GROUP_SIZE) -> bool:
        """Whether the kernel can hold `layer`'s shape."""
        return layer.in_features % group_size == 0 and layer.out_features % _ROWS_MULTIPLE == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise TinyLMError("int4 weights run on the CPU only; load the model without --quantize on a GPU")
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, self.group_size, self.scales_and_zeros
        )
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
        )


@dataclass
class Int4Report:
    """What `quantize_int4` did: layers converted and kept, bytes of their weights, worst rounding error."""

    quantized: int
    kept: list[str]
    fp32_bytes: int
    int4_bytes: int
    max_error: float
    """Largest |dequantized - original| over all quantized weights: 0.0 when the model came from Q4_1."""

    def __str__(self) -> str:
        kept = (
            f"; kept in full precision (shape not a multiple of the kernel's tiles): {', '.join(self.kept)}"
        )
        return (
            f"int4 weights: {self.quantized} linear layers, {self.fp32_bytes / 2**20:.0f} MiB -> "
            f"{self.int4_bytes / 2**20:.0f} MiB, largest rounding error {self.max_error:.3g}"
            f"{' (lossless)' if self.max_error == 0 else ''}{kept if self.kept else ''}"
        )


class Int4Quantizer:
    """A `convert_linears` converter to `Int4Linear` that adds what it did to `self.report`.

    `quantize_int4` runs it over a loaded model; `load_model(..., convert=Int4Quantizer())` runs it on each
    layer as soon as that layer's weights are read, so the full-precision blocks never exist all at once.
    """

    def __init__(self, group_size: int = GROUP_SIZE) -> None:
        self.group_size = group_size
        self.report = Int4Report(0, [], 0, 0, 0.0)

    def __call__(self, name: str, layer: nn.Module) -> nn.Module | None:
        report = self.report
        if not isinstance(layer, nn.Linear) or not Int4Linear.fits(layer, self.group_size):
            report.kept.append(name)
            return None
        weights = Int4Weights.quantize(layer.weight, self.group_size)
        error = (weights.dequantize() - layer.weight.float()).abs().max().item()
        report.max_error = max(report.max_error, error)
        report.quantized += 1
        report.fp32_bytes += layer.weight.numel() * 4
        quantized = Int4Linear(weights, layer.bias)
        report.int4_bytes += quantized.packed.numel() + quantized.scales_and_zeros.numel() * 2
        return quantized


def quantize_int4(model: nn.Module, group_size: int = GROUP_SIZE) -> Int4Report:
    """Replace the linear layers of the model's blocks by `Int4Linear`, in place.

    The embedding and the LM head stay as they are: the head is usually tied to the embedding, which every
    token reads one row of.
    """
    quantizer = Int4Quantizer(group_size)
    convert_linears(model, quantizer)
    return quantizer.report
