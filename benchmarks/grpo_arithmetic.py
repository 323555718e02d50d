"""Arithmetic word problems: held-out accuracy before vs after GRPO with the verifiable answer check.

    .venv/bin/python benchmarks/grpo_arithmetic.py [--sft DIR] [--work runs/align-arith] [--seeds 1 2]

The reward is `arithmetic_reward`: 1 when the last number of the answer equals the problem's answer. The
starting policy, unless `--sft` names one, is a stand-in: a tokenizer trained on the task's training text
and a small model fine-tuned from scratch on the worked solutions (`align_poems.standin_sft`). Accuracy
is measured on held-out problems (`tinylm data make arithmetic` test split), one sample each at
temperature 1 with a fixed seed.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from align_poems import CPU, evaluate, run, standin_sft

from tinylm.model import ModelConfig
from tinylm.train.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/align-arith", help="Working directory for data and runs.")
    parser.add_argument("--sft", default=None, help="SFT arithmetic model (default: train the stand-in).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=200, help="Held-out problems scored.")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="GRPO optimizer steps.")
    args = parser.parse_args()
    work = Path(args.work)
    data = work / "data"
    if not (data / "test.jsonl").is_file():
        run(["data", "make", "arithmetic", "--out", str(data)])
    sft = Path(args.sft) if args.sft else None
    if sft is None:
        tok = work / "tok"
        if not (tok / "tokenizer.json").is_file():
            cmd = f"tokenizer train --data {data / 'train.jsonl'} --out {tok} --vocab_size 512"
            run([*shlex.split(cmd), "--template", "{prompt} {completion}"])
        print("stand-in SFT: d_model 96, 3 layers, from scratch on the worked solutions, 800 steps or 12 min")
        model = ModelConfig(vocab_size=512, d_model=96, n_layer=3, n_head=4, max_seq_len=160)
        config = TrainConfig(
            lr=3e-3,
            warmup_steps=30,
            batch_size=32,
            max_steps=800,
            max_time="12m",
            checkpoint_every=100,
            eval_every=0,
            device="cpu",
        )
        sft = standin_sft(str(data / "train.jsonl"), str(tok), work / "sft", model, config)
    test, mnt = data / "test.jsonl", args.max_new_tokens
    rows = [("SFT (start)", None, evaluate(sft, test, "arithmetic", sft, args.n, args.max_new_tokens), 0.0)]
    for seed in args.seeds:
        out = work / f"grpo-seed{seed}"
        cmd = shlex.split(
            f"grpo --data {data} --model {sft} --reward arithmetic --out {out} {CPU} --train.seed {seed} "
            f"--train.max_steps {args.steps} --train.batch_size 32 --train.lr 5e-4 --train.warmup_steps 2 "
            f"--train.checkpoint_every 8 --grpo.group_size 8 --grpo.max_new_tokens {mnt} --grpo.eval_prompts 0"
        )
        seconds = run(cmd)
        rows.append(
            (
                "GRPO",
                seed,
                evaluate(out / "model", test, "arithmetic", sft, args.n, args.max_new_tokens),
                seconds,
            )
        )

    print(f"\nheld-out problems: {args.n}, one sample each at temperature 1 (seed 0); KL in nats per answer")
    print(f"{'model':<12} {'seed':>4} {'accuracy':>9} {'KL to SFT':>9} {'time s':>7}")
    for name, seed, m, seconds in rows:
        print(f"{name:<12} {seed or '-':>4} {m['reward']:>9.4f} {m['kl']:>9.3f} {seconds:>7.0f}")


if __name__ == "__main__":
    main()
