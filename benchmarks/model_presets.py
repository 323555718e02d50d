"""Parameters, FLOPs per token and forward+backward training speed of each model preset.

    .venv/bin/python benchmarks/model_presets.py [--context 256] [--batch 2] [--steps 3] [--presets 1m 10m]

Speed is the median over `steps` timed steps (after one warm-up step) of a forward pass, cross-entropy
loss and backward pass on random tokens, fp32 on CPU. MFU divides the achieved model FLOP/s by the
FLOP/s of a 2048x2048 fp32 matmul measured just before and after each preset (the better of the two),
so that on a shared, noisy machine the ratio compares numbers taken under the same load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from tinylm.models import PRESETS, ModelConfig, build_model, model_flops_per_token, param_counts


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of an n x n fp32 matmul: the machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_step_seconds(config: ModelConfig, batch: int, context: int, steps: int) -> float:
    """Median wall time of one forward + backward pass."""
    torch.manual_seed(0)
    model = build_model(config).train()
    x = torch.randint(0, config.vocab_size, (batch, context + 1))

    def step() -> None:
        logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, kernels
    return statistics.median(_timed(step) for _ in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/model_presets.py " + " ".join(sys.argv[1:]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'preset':<14} {'params':>13} {'non-embed':>12} {'FLOPs/token':>14} {'step s':>8} "
        f"{'tokens/s':>9} {'peak GF/s':>9} {'MFU':>6}   (context {args.context}, batch {args.batch})"
    )
    for name in args.presets:
        config = ModelConfig(preset=name, max_seq_len=max(args.context, PRESETS[name].get("max_seq_len", 0)))
        counts, flops = param_counts(config), model_flops_per_token(config, args.context)
        before = matmul_flops()
        seconds = train_step_seconds(config, args.batch, args.context, args.steps)
        peak = max(before, matmul_flops())
        tokens_per_s = args.batch * args.context / seconds
        print(
            f"{name:<14} {counts.total:>13,} {counts.blocks:>12,} {flops:>14,} "
            f"{seconds:>8.3f} {tokens_per_s:>9.0f} {peak / 1e9:>9.0f} {flops * tokens_per_s / peak:>6.1%}"
        )


if __name__ == "__main__":
    main()
