"""tinylm's own int4 kernel against torch's, layer by layer, on SmolLM2-135M's shapes.

For each fused layer shape of a SmolLM2 block (q/k/v, o, gate/up, down) and 1 or 5 input rows (a decode
step; a speculative verification), prints the median microseconds of both kernels on the same random Q4_1
weights, side by side in one run, their ratio, the bandwidth the weights are read at, and each kernel's
relative error against an fp32 matmul with the dequantised weight (own: two int8 parts per activation;
torch's: bfloat16 activations).

    .venv/bin/python benchmarks/int4_kernel.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from tinylm.models import kernels
from tinylm.models.quant import Int4Linear, Int4Weights

SHAPES = {"q/k/v": (960, 576), "o": (576, 576), "gate/up": (3072, 576), "down": (576, 1536)}
"""(out, in) of SmolLM2-135M's fused int4 layers."""


def layer(weights: Int4Weights, own: bool) -> Int4Linear:
    if own:
        return Int4Linear(weights, None)
    with kernels.disabled():
        return Int4Linear(weights, None)


def micros(module: Int4Linear, x: torch.Tensor, repeats: int) -> float:
    """Median microseconds of one call."""
    with torch.inference_mode():
        for _ in range(10):
            module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    if not kernels.vnni():
        sys.exit("tinylm's int4 kernel is unavailable here (it needs a C++ compiler and AVX-512 VNNI)")
    print(f"# python benchmarks/int4_kernel.py {' '.join(sys.argv[1:])}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'layer':8} {'rows':>4} {'own us':>8} {'torch us':>9} {'ratio':>6} {'own GB/s':>9} {'own err':>8} {'torch err':>9}"
    )
    torch.manual_seed(0)
    for name, (out_features, in_features) in SHAPES.items():
        weights = Int4Weights.quantize(torch.randn(out_features, in_features) * 0.05)
        own, theirs = layer(weights, True), layer(weights, False)
        dense = own.dequantize()
        for rows in (1, 5):
            x = torch.randn(rows, in_features)
            exact = x @ dense.T
            err = [((m(x) - exact).norm() / exact.norm()).item() for m in (own, theirs)]
            t_own, t_torch = micros(own, x, args.repeats), micros(theirs, x, args.repeats)
            gbs = own.nbytes / t_own / 1e3
            print(
                f"{name:8} {rows:4} {t_own:8.1f} {t_torch:9.1f} {t_torch / t_own:5.2f}x {gbs:9.1f} "
                f"{err[0]:8.1e} {err[1]:9.1e}"
            )


if __name__ == "__main__":
    main()
