"""Wall time and peak resident memory of `tinylm import gguf` on SmolLM2-135M-Instruct (Q4_1).

    .venv/bin/python benchmarks/import_gguf.py [--runs 3] [--file PATH.gguf]

Each run is a fresh process under `/usr/bin/time -v` (so the number includes Python and torch start-up,
as a user sees it); prints every run and the median.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tinylm.interop.packaged import smollm2_gguf

IMPORT = "from tinylm.interop.gguf import import_gguf; import_gguf({file!r}, out={out!r})"


def run_once(file: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one import in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        code = IMPORT.format(file=str(file), out=str(Path(tmp) / "ckpt"))
        result = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    wall = re.search(
        r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr
    )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", type=Path, default=None)
    args = parser.parse_args()
    file = args.file or smollm2_gguf()
    print("command: .venv/bin/python benchmarks/import_gguf.py " + " ".join(sys.argv[1:]))
    print(f"file: {file} ({file.stat().st_size / 2**20:.0f} MiB)")
    runs = [run_once(file) for _ in range(args.runs)]
    for i, (wall, rss) in enumerate(runs, 1):
        print(f"run {i}: {wall:.1f} s wall, {rss:.0f} MiB peak RSS")
    print(
        f"median: {statistics.median(w for w, _ in runs):.1f} s wall, "
        f"{statistics.median(r for _, r in runs):.0f} MiB peak RSS (float32 output, 538 MB model.safetensors)"
    )


if __name__ == "__main__":
    main()
