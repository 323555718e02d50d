"""What the multi-step benchmarks share: run one `tinylm` command in-process, printed first and timed, so
every number a benchmark prints can be traced to the command that made it."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from tinylm.cli import main as tinylm


def run(args: list[str]) -> float:
    """Run one tinylm command, print it, return its wall time in seconds."""
    print("$ tinylm " + shlex.join(args), flush=True)
    start = time.perf_counter()
    if tinylm(args) != 0:
        raise SystemExit(f"failed: tinylm {shlex.join(args)}")
    return time.perf_counter() - start


def run_step(*args: str, skip_if: Path | None = None) -> None:
    """Run one tinylm command in its own process (so its memory is its own), printed first; skip it when
    `skip_if` exists, so a rerun of a long benchmark only redoes what is missing."""
    print("$ tinylm " + shlex.join(args), flush=True)
    if skip_if is not None and skip_if.exists():
        print(f"  (skipped: {skip_if} exists)")
        return
    subprocess.run([sys.executable, "-m", "tinylm.cli", *args], check=True)
