"""How fast `tinylm ngram train` counts and smooths, and how much memory it takes: seconds and peak RSS.

Each row is the real CLI in its own process under `/usr/bin/time -v` (interpolated modified Kneser-Ney,
held-out split scored and the model saved, as a user runs it): its training seconds (vocabulary,
counting and smoothing, as `ngram.json` records them), its whole wall-clock seconds (imports, reading,
scoring, saving included) and its peak resident memory. The corpora are the embedded `shakespeare`
(5 MB) and `shakespeare+kjv`, Shakespeare then the King James Bible one verse a line in one text file
(10 MB). Run it alone on the machine: timings of a loaded machine say little. Prints Markdown.

    .venv/bin/python benchmarks/ngram_train_speed.py
    .venv/bin/python benchmarks/ngram_train_speed.py --chars 20000 --runs char:3   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinylm.data import read_documents

TINYLM = str(Path(sys.executable).with_name("tinylm"))
RUNS = ("char:3", "char:5", "word:3")


def corpus_file(name: str, chars: int | None, folder: Path) -> Path:
    """One text file of the corpus (its first `chars` characters when given); `a+b` joins corpora a and b."""
    text = "\n".join(doc for part in name.split("+") for doc in read_documents(part))
    path = folder / f"{name.replace('+', '_')}.txt"
    path.write_text(text[:chars] if chars else text, encoding="utf-8")
    return path


def train(data: Path, unit: str, order: int, out: Path) -> dict:
    """Train once through the CLI: training seconds, wall seconds and peak resident MB."""
    cmd = [TINYLM, "ngram", "train", "--data", str(data), "--unit", unit, "--order", str(order)]
    timed = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    proc = subprocess.run(
        [*timed, *cmd, "--out", str(out), "--overwrite", "true"], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    config = json.loads((out / "ngram.json").read_text())
    return {
        "train": config["train_seconds"],
        "wall": wall,
        "rss": int(rss.group(1)) / 1024 if rss else float("nan"),
        "ngrams": config["ngrams"],
        "bpb": config["val"]["bpb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["shakespeare", "shakespeare+kjv"])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="unit:order pairs")
    parser.add_argument("--chars", type=int, default=None, help="only the first CHARS characters (smoke)")
    args = parser.parse_args()
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| corpus | MB | unit | order | train s | wall s | peak RSS MB | n-grams | val bpb |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora:
            data = corpus_file(name, args.chars, Path(tmp))
            mb = data.stat().st_size / 1e6
            for run in args.runs:
                unit, order = run.split(":")
                r = train(data, unit, int(order), Path(tmp) / "model")
                print(
                    f"| {name} | {mb:.1f} | {unit} | {order} | {r['train']:.2f} | {r['wall']:.1f} "
                    f"| {r['rss']:.0f} | {sum(r['ngrams']):,} | {r['bpb']:.4f} |",
                    flush=True,
                )
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
