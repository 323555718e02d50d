"""A real CPU scaling sweep: IsoFLOP budgets × model sizes on Shakespeare's plays, the Chinchilla fits, and
how well a fit without the largest run predicts that run.

Protocol: a byte-level BPE tokenizer (--vocab-size, default 4096) and shards of the embedded `shakespeare`
corpus (first 90 % of the characters train, last 10 % validation); `tinylm scaling sweep` with every size
at every FLOP budget (tokens = budget / tinylm's FLOPs per token, attention and LM head included), the final
validation loss over the whole validation split; then `tinylm scaling fit --holdout_largest true`. The
defaults (4 sizes × 3 budgets, 1.7e13 FLOPs in all) are meant to take about 12 minutes on a 2-core CPU
at 1-2 TFLOP per minute; the sweep prints its plan first and its estimate after the first run. The sweep
resumes: rerunning the same command skips finished runs.

Reported: the fitted α and β, the held-out run's predicted vs measured loss (% error), the
tokens-per-parameter ratio at each budget (Chinchilla ≈ 20; nanochat reports ≈ 8), the IsoFLOP exponents,
and the plots law.png and isoflop.png in the sweep directory.

    .venv/bin/python benchmarks/scaling_sweep.py
    .venv/bin/python benchmarks/scaling_sweep.py --chars 60000 --vocab-size 512 --context 32 --batch-size 4 \
        --sizes 32x1 64x1 96x1 128x1 --flops 4e8 8e8 1.6e9 --warmup 1 --work /tmp/scaling-smoke   # smoke only
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINYLM = str(Path(sys.executable).with_name("tinylm"))


def tinylm(*args: str) -> None:
    print("$", shlex.join(["tinylm", *args]), flush=True)
    subprocess.run([TINYLM, *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-scaling"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--chars", type=int, default=0, help="use only the first CHARS characters (0: all)")
    parser.add_argument("--sizes", nargs="+", default=["32x2", "64x2", "128x3", "192x4"])
    parser.add_argument("--flops", nargs="+", default=["3e11", "1e12", "3e12"])
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", default="3e-3")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    corpus = work / "shakespeare.txt"
    if not corpus.exists():
        from tinylm.data import CORPORA

        with lzma.open(CORPORA["shakespeare"].path, "rt", encoding="utf-8") as f:
            text = f.read(args.chars) if args.chars else f.read()
        corpus.write_text(text, encoding="utf-8")
    if not (work / "tokenizer" / "tokenizer.json").exists():
        tinylm("tokenizer", "train", "--data", str(corpus), "--out", str(work / "tokenizer"),
               "--vocab_size", str(args.vocab_size))  # fmt: skip
    tinylm("data", "prepare", "--data", str(corpus), "--tokenizer", str(work / "tokenizer"),
           "--out", str(work / "shards"))  # fmt: skip
    sweep = work / "sweep"
    tinylm(
        "scaling", "sweep", "--shards", str(work / "shards"), "--out", str(sweep),
        "--sizes", f"[{', '.join(args.sizes)}]", "--flops", f"[{', '.join(args.flops)}]",
        "--head_dim", str(args.head_dim), "--context", str(args.context),
        "--train.batch_size", str(args.batch_size), "--train.lr", args.lr,
        "--train.warmup_steps", str(args.warmup), "--train.eval_every", "0", "--train.eval_batches", "1",
        "--train.checkpoint_every", "0", "--train.device", "cpu",
    )  # fmt: skip
    tinylm("scaling", "fit", "--sweep", str(sweep), "--holdout_largest", "true")

    rows = [json.loads(line) for line in (sweep / "runs.jsonl").read_text().splitlines()]
    fit = json.loads((sweep / "fit.json").read_text())
    print("\n| run | non-emb params | tokens | FLOPs | val loss | val bpb | fit | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r, res in zip(rows, fit["residuals"], strict=True):
        print(f"| {r['name']} | {r['n_params_non_embedding']:,} | {r['tokens']:,} | {r['flops']:.3g} | "
              f"{r['val_loss']:.4f} | {r['val_bpb']:.4f} | {res['predicted']:.4f} | {r['train_seconds']:.0f} |")  # fmt: skip
    law, held = fit["law"], fit["holdout"]
    print(f"\n| quantity | value |\n|---|---:|\n| α | {law['alpha']:.3f} |\n| β | {law['beta']:.3f} |")
    print(f"| E, A, B | {law['E']:.3f}, {law['A']:.3g}, {law['B']:.3g} |")
    print(
        f"| held-out {held['name']}: predicted / measured | {held['predicted']:.4f} / {held['actual']:.4f} |"
    )
    print(f"| held-out prediction error | {held['error_pct']:+.2f} % |")
    for c in fit["compute_optimal"]:
        print(f"| tokens per parameter at C = {c['flops']:.3g} (approach 3) | {c['tokens_per_param']:.1f} |")
    iso = fit["isoflop"]
    for p in iso["profiles"]:
        print(
            f"| tokens per parameter at C = {p['budget']:.3g} (IsoFLOP minimum) | {p['d_opt'] / p['n_opt']:.1f} |"
        )
    if "n_opt_exponent" in iso:
        print(
            f"| IsoFLOP N_opt ∝ C^a, D_opt ∝ C^b | a = {iso['n_opt_exponent']:.3f}, b = {iso['d_opt_exponent']:.3f} |"
        )
    for s in iso["skipped"]:
        print(f"| IsoFLOP C = {s['flops']:.3g} | skipped: {s['reason']} |")
    print(f"| total training seconds | {sum(r['train_seconds'] for r in rows):.0f} |")
    print(f"\nplots: {sweep / 'law.png'}, {sweep / 'isoflop.png'}")


if __name__ == "__main__":
    main()
