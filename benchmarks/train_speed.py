"""Training throughput: tokens/s and MFU of the shared training loop, per model preset, at context 256.

    MFU = model FLOPs per token × tokens/s / peak FLOP/s of a 2048×2048 fp32 matmul loop in this process

(see ../shared/BENCHMARKS.md). It runs the real loop (`tinylm.train.train`: AdamW, clipping, metrics) on
random tokens, drops the first steps (warm-up, compilation), and reports the median step. The peak is
measured before and after the timed steps and the higher value is used, so a burst of load from other
processes during one peak measurement cannot inflate MFU. On a shared machine quote medians of several
runs; the target is MFU ≥ 50 % for the 10m preset on CPU in fp32.

    .venv/bin/python benchmarks/train_speed.py                      # 1m, 10m, 50m
    .venv/bin/python benchmarks/train_speed.py --presets 10m --compile --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.data.shards import RandomWindows
from tinylm.models import ModelConfig, build_model, model_flops_per_token
from tinylm.train import Objective, TrainConfig, seed_everything, train
from tinylm.train.loop import measure_matmul_flops

DEFAULT_BATCH = {"1m": 32, "10m": 16, "50m": 8, "smollm2-135m": 4}


def peak_flops() -> float:
    return measure_matmul_flops.__wrapped__("cpu", torch.float32, 1.0)  # uncached: measure now


def run_preset(preset: str, args: argparse.Namespace) -> dict[str, float]:
    config = ModelConfig(preset=preset, vocab_size=args.vocab, max_seq_len=max(args.context, 256))
    seed_everything(0)
    model = build_model(config)
    tokens = np.random.default_rng(0).integers(0, args.vocab, size=2_000_000, dtype=np.int64)
    batch_size = args.batch_size or DEFAULT_BATCH.get(preset, 8)
    windows = RandomWindows(tokens, args.context, batch_size, seed=0)

    def loss(m, batch):
        x, y = batch
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())

    cfg = TrainConfig(
        max_steps=args.warmup + args.steps,
        batch_size=batch_size,
        warmup_steps=0,
        eval_every=0,
        checkpoint_every=0,
        compile=args.compile,
        precision=args.precision,
        device="cpu",
        log_every=1,
    )
    fpt = model_flops_per_token(config, args.context)
    peak_before = peak_flops()
    with tempfile.TemporaryDirectory() as out:
        train(model, Objective(windows.batch, loss, flops_per_token=fpt), cfg, out, desc=preset)
        records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    peak = max(peak_before, peak_flops())
    timed = [r["tokens_per_s"] for r in records[args.warmup :]]
    tokens_per_s = statistics.median(timed)
    return {
        "params_M": model.num_params() / 1e6,
        "non_embedding_M": model.num_params(non_embedding=True) / 1e6,
        "batch": batch_size,
        "tokens_per_s": tokens_per_s,
        "model_gflops": fpt * tokens_per_s / 1e9,
        "peak_gflops": peak / 1e9,
        "mfu": fpt * tokens_per_s / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["1m", "10m", "50m"])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size (a tokenizer's)")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="sequences per step (0: per-preset default)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()

    print("command:", shlex.join([".venv/bin/python", *sys.argv]))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, context {args.context}, vocab {args.vocab}"
    )
    rows = [(preset, run_preset(preset, args)) for preset in args.presets]
    print(
        f"\n{'preset':<14}{'params':>9}{'non-emb':>9}{'batch':>7}{'tokens/s':>11}{'GFLOP/s':>9}{'peak':>8}{'MFU':>7}"
    )
    for preset, r in rows:
        print(
            f"{preset:<14}{r['params_M']:>8.1f}M{r['non_embedding_M']:>8.1f}M{r['batch']:>7}"
            f"{r['tokens_per_s']:>11,.0f}{r['model_gflops']:>9.1f}{r['peak_gflops']:>8.1f}{r['mfu']:>7.1%}"
        )


if __name__ == "__main__":
    main()
