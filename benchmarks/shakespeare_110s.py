"""Quality at a fixed budget: validation bits per byte after 110 s of pretraining on Shakespeare's plays.

BENCHMARKS.md's protocol: the plays (`shakespeare`, the embedded copy of shakespeare_plays.txt), first
90 % of the characters for training and the last 10 % for validation, a model trained from scratch for
110 s of training wall time (optimizer steps only; evaluation and saving are not counted), then scored
on the whole validation split. Target: ≤ 2.35 bpb; a well-known minimal character-level GPT reaches
2.70 bpb in the same time on this machine.

The tokenizer and shards are made once under --work; each run is the real CLI in a subprocess (so its
peak resident memory is its own), with seeds 1337, 1338, ... The median over --runs is the number to
quote. On a shared machine the 110 s buy fewer steps, so the score is pessimistic: also note the load.

    .venv/bin/python benchmarks/shakespeare_110s.py --runs 3
    .venv/bin/python benchmarks/shakespeare_110s.py --max-time 30s --train.lr 0.003   # quick look, overrides
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINYLM = str(Path(sys.executable).with_name("tinylm"))


def run(cmd: list[str], capture_rss: bool = False) -> float | None:
    """Run a command, echoing it; return its peak resident memory in MB when asked (via /usr/bin/time -v)."""
    print("$", shlex.join(["tinylm", *cmd[1:]] if cmd[0] == TINYLM else cmd), flush=True)
    if capture_rss and Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stderr=subprocess.PIPE, text=True)
        sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if "\t" not in line))
        if proc.returncode:
            sys.exit(f"command failed with exit code {proc.returncode}")
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        return int(match.group(1)) / 1024 if match else None
    subprocess.run(cmd, check=True)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "shakespeare-110s.yaml"))
    parser.add_argument(
        "--runs", type=int, default=1, help="independent runs (seeds); the median is reported"
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-shakespeare-110s"))
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary of the tokenizer")
    parser.add_argument("--max-time", default=None, help="override the recipe's budget (quick looks only)")
    args, overrides = parser.parse_known_args()
    work = Path(args.work)
    env_load = os.getloadavg()[0]

    tokenizer, shards = work / f"tokenizer-{args.vocab_size}", work / f"shards-{args.vocab_size}"
    run(
        [
            TINYLM,
            "tokenizer",
            "train",
            "--data",
            "shakespeare",
            "--out",
            str(tokenizer),
            "--vocab_size",
            str(args.vocab_size),
        ]
    )
    prepare = [
        "data",
        "prepare",
        "--data",
        "shakespeare",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(shards),
    ]
    run([TINYLM, *prepare, "--val_fraction", "0.1"])
    if args.max_time:
        overrides += ["--train.max_time", args.max_time]

    results = []
    for i in range(args.runs):
        out = work / f"run-{i + 1}"
        cmd = [
            TINYLM,
            "pretrain",
            "--shards",
            str(shards),
            "--out",
            str(out),
            args.recipe,
            "--train.seed",
            str(1337 + i),
        ]
        rss = run([*cmd, *overrides, "--overwrite", "true"], capture_rss=True)
        r = json.loads((out / "results.json").read_text())
        r["peak_rss_mb"] = rss
        results.append(r)
        print(
            f"run {i + 1}: val {r['val_bpb']:.4f} bpb, {r['step']} steps, {r['tokens_seen']:,} tokens in "
            f"{r['train_seconds']:.1f} s ({r['tokens_seen'] / r['train_seconds']:,.0f} tokens/s), "
            f"peak RSS {rss or float('nan'):.0f} MB",
            flush=True,
        )

    bpbs = [r["val_bpb"] for r in results]
    print(
        f"\nrecipe {args.recipe}, tokenizer vocab {args.vocab_size}, overrides {shlex.join(overrides) or 'none'}"
    )
    print(f"load average at start {env_load:.1f} on {os.cpu_count()} cores; now {os.getloadavg()[0]:.1f}")
    print(
        f"validation bits per byte: {', '.join(f'{b:.4f}' for b in bpbs)}; median {statistics.median(bpbs):.4f}"
    )
    print("target <= 2.35 (reference minimal GPT: 2.70)")
    rss = [r["peak_rss_mb"] for r in results if r["peak_rss_mb"]]
    if rss:
        print(f"peak resident memory: {max(rss):.0f} MB (target < 3072 MB)")
    print("command:", shlex.join([".venv/bin/python", "benchmarks/shakespeare_110s.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
