"""What the multi-step benchmarks share: run one `tinylm` command in-process, printed first and timed, so
every number a benchmark prints can be traced to the command that made it."""

from __future__ import annotations

import shlex
import time

from tinylm.cli import main as tinylm


def run(args: list[str]) -> float:
    """Run one tinylm command, print it, return its wall time in seconds."""
    print("$ tinylm " + shlex.join(args), flush=True)
    start = time.perf_counter()
    if tinylm(args) != 0:
        raise SystemExit(f"failed: tinylm {shlex.join(args)}")
    return time.perf_counter() - start
