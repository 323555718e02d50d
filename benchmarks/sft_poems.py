"""From scratch to an instruction-following poet: does SFT teach "写一首五言绝句，题为《X》。"?

    .venv/bin/python benchmarks/sft_poems.py [--work runs/sft_poems] [--pretrain-time 16m] [--sft-steps 330]

Pretrains a small model on the embedded Tang poems (title + text, no chat format; 128-token windows, room
for the chat prompt and its answer, which SFT and evaluation need), SFT-tunes it on the 五言绝句 rows of
`tinylm data make poems` (`select_form`: one form is learned far sooner than two), and prints the share of
exact 五言绝句 among the answers for 100 held-out titles (`tinylm eval run poems`), before SFT (prompting
the base model with the same chat prompt) and after, decoding greedily and by sampling at temperature 0.7.
Every step is a `tinylm` command, printed before it runs; a step whose output exists is skipped, so a rerun
only re-prints the numbers.

Pretraining is budgeted by time, so run it on a machine to itself: 16 minutes of it reach ~2,100 steps and
2.44 bits per byte on 2 idle cores, but only 131 steps when other training shared them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cli_steps import run_step

from tinylm.tasks.poems import select_form


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/sft_poems"))
    parser.add_argument("--pretrain-time", default="16m")
    parser.add_argument("--sft-steps", default="330", help="110 steps are one epoch of the 五言绝句 rows")
    parser.add_argument("--n", default="100", help="held-out titles")
    args = parser.parse_args()
    w = args.work
    print("command: .venv/bin/python benchmarks/sft_poems.py " + shlex.join(sys.argv[1:]))
    template = r"{title}\n{paragraphs}"
    tok, shards, pre, poems, sft = w / "tokenizer", w / "shards", w / "pretrain", w / "poems", w / "sft"
    run_step("tokenizer", "train", "--data", "tang", "--template", template, "--vocab_size", "6000",
           "--out", str(tok), skip_if=tok)  # fmt: skip
    run_step("data", "prepare", "--data", "tang", "--template", template, "--tokenizer", str(tok),
           "--out", str(shards), "--val_fraction", "0.02", skip_if=shards)  # fmt: skip
    run_step("pretrain", "--shards", str(shards), "--out", str(pre), "--model.d_model", "192",
           "--model.n_layer", "4", "--model.n_head", "4", "--model.max_seq_len", "128", "--context", "128",
           "--train.batch_size", "16", "--train.max_steps", "null", "--train.max_time", args.pretrain_time,
           "--train.lr", "3e-3", "--train.warmup_steps", "30", "--train.checkpoint_every", "0",
           "--train.eval_batches", "5", "--train.device", "cpu", "--sample_prompt", "静夜思",
           "--sample_tokens", "40", skip_if=pre / "model")  # fmt: skip
    run_step("data", "make", "poems", "--out", str(w / "poems_all"), skip_if=w / "poems_all" / "test.jsonl")
    print(f"$ keep the 五言绝句 rows: select_form({w / 'poems_all'}, {poems}, '五言绝句')")
    select_form(w / "poems_all", poems, "五言绝句")
    run_step("sft", "--model", str(pre / "model"), "--data", str(poems), "--out", str(sft), "--mode", "full",
           "--train.lr", "2e-3", "--train.batch_size", "32", "--train.max_steps", args.sft_steps,
           "--train.warmup_steps", "20", "--train.eval_every", "0", "--train.eval_batches", "10",
           "--train.checkpoint_every", "0", "--train.keep_last", "1", skip_if=sft / "model")  # fmt: skip
    evals = {}
    for temperature in ("0", "0.7"):
        for name, model in (("before SFT", pre / "model"), ("after SFT", sft / "model")):
            result = w / f"eval_run_{name.split()[0]}_t{temperature}.json"
            run_step("eval", "run", "poems", "--model", str(model), "--data", str(poems), "--n", args.n,
                   "--sampling.max_new_tokens", "40", "--sampling.temperature", temperature, "--sampling.seed", "0",
                   "--out", str(result), skip_if=result)  # fmt: skip
            evals[f"{name}, temperature {temperature}"] = json.loads(result.read_text())
    fit = json.loads((sft / "results.json").read_text())
    print(f"\nSFT: {fit['step']} steps ({fit['epochs']:.2f} epochs) in {fit['train_seconds']:.0f} s, "
          f"held-out loss {fit['val_loss_before']:.3f} -> {fit['val_loss_after']:.3f}")  # fmt: skip
    for name, r in evals.items():
        sample, exact = r["samples"][0], round(r["exact_form"] * r["prompts"])
        print(f"{name}: {exact}/{r['prompts']} exact 五言绝句 ({r['exact_form']:.0%}), mean form score "
              f"{r['form_score']:.3f}; e.g. {sample['prompt']} {sample['answer'].strip()!r}")  # fmt: skip


if __name__ == "__main__":
    main()
