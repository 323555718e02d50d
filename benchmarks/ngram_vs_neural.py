"""Where language models began: n-gram models of orders 1-5 against neural ones, in bits per byte on the
same held-out text.

For each corpus (default: Shakespeare's plays and the Tang poems), `tinylm ngram train` (interpolated
modified Kneser-Ney) of each order, split as `tinylm data prepare` splits it, with its training time and
peak resident memory (each run is the real CLI in its own process). Each `--neural RUN_DIR` (a `tinylm
pretrain` run directory) is scored with `tinylm eval bpb` on the val split of the shards it was trained
on, and n-grams are trained on the train split of those same shards (`--shards`), so the rows of that
block share text and denominator exactly. A second table compares the estimators (mkn, kn, wb, addk) by
held-out perplexity at one order. Prints Markdown.

    .venv/bin/python benchmarks/ngram_vs_neural.py
    .venv/bin/python benchmarks/ngram_vs_neural.py --unit char --neural runs/shakespeare-10m
    .venv/bin/python benchmarks/ngram_vs_neural.py --data some.txt --orders 1 2 --method-order 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

TINYLM = str(Path(sys.executable).with_name("tinylm"))
METHODS = ("mkn", "kn", "wb", "addk")


def run(cmd: list[str]) -> tuple[str, float | None]:
    """(stdout, peak resident MB or None) of a command; exits on failure."""
    print("$", shlex.join(["tinylm", *cmd[1:]] if cmd[0] == TINYLM else cmd), file=sys.stderr, flush=True)
    timed = Path("/usr/bin/time").exists()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd] if timed else cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}):\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return proc.stdout, int(rss.group(1)) / 1024 if rss else None


def ngram(out: Path, source: list[str], unit: str, order: int, method: str = "mkn") -> dict:
    """Train one n-gram model through the CLI; its held-out scores, training seconds and peak RSS."""
    cmd = [TINYLM, "ngram", "train", *source, "--unit", unit, "--order", str(order), "--method", method]
    _, rss = run([*cmd, "--out", str(out), "--overwrite", "true"])
    config = json.loads((out / "ngram.json").read_text())
    return {**config["val"], "seconds": config["train_seconds"], "rss": rss}


def neural(run_dir: Path) -> tuple[str, float]:
    """(shards directory, val bits per byte) of a pretrain run, scored by `tinylm eval bpb`."""
    shards = yaml.safe_load((run_dir / "config.yaml").read_text())["shards"]
    out, _ = run([TINYLM, "eval", "bpb", "--model", str(run_dir / "model"), "--data", shards])
    return shards, float(re.search(r"val bits per byte: ([\d.]+)", out).group(1))


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["shakespeare", "tang"], help="corpora (names or paths)")
    parser.add_argument("--orders", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--unit", default="char", choices=["char", "token"], help="token needs --tokenizer")
    parser.add_argument("--tokenizer", help="tokenizer directory for --unit token on a corpus")
    parser.add_argument("--neural", nargs="*", default=[], type=Path, help="tinylm pretrain run directories")
    parser.add_argument("--method-order", type=int, default=3, help="order of the estimator comparison")
    parser.add_argument("--work", type=Path, help="where models go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ngram-bench-") as tmp:
        work = args.work or Path(tmp)
        extra = ["--tokenizer", args.tokenizer] if args.tokenizer else []
        lines = [row("text", "model", "val bpb", "train s", "peak RSS MB"), row(*["---"] * 5)]
        sources = [(name, ["--data", name, *extra]) for name in args.data]
        shards_of = {}
        for run_dir in args.neural:
            shards, bpb = neural(run_dir)
            shards_of[shards] = shards_of.get(shards, []) + [(run_dir, bpb)]
        sources += [(f"{s} (shards)", ["--shards", s]) for s in shards_of]
        for name, source in sources:
            for order in args.orders:
                slug = re.sub(r"\W+", "-", name).strip("-")
                r = ngram(work / f"{slug}-{args.unit}-{order}", source, args.unit, order)
                rss = f"{r['rss']:.0f}" if r["rss"] else "?"
                lines.append(
                    row(
                        name, f"{order}-gram mkn ({args.unit})", f"{r['bpb']:.4f}", f"{r['seconds']:.1f}", rss
                    )
                )
            for run_dir, bpb in shards_of.get(source[-1], []):
                lines.append(row(name, f"neural {run_dir}", f"{bpb:.4f}", "", ""))
        print("\n".join(lines))
        print(f"\nEstimators at order {args.method_order} ({args.unit}): held-out perplexity per token\n")
        table = [row("text", *METHODS), row(*["---"] * (len(METHODS) + 1))]
        for name, source in sources:
            slug = re.sub(r"\W+", "-", name).strip("-")
            cells = [
                ngram(work / f"{slug}-{m}", source, args.unit, args.method_order, m)["perplexity"]
                for m in METHODS
            ]
            table.append(row(name, *(f"{p:.3f}" for p in cells)))
        print("\n".join(table))


if __name__ == "__main__":
    main()
