"""Does cleaning help? The same small model, the same budget, pretrained on raw vs cleaned Tang poems.

    .venv/bin/python benchmarks/clean_effect.py [--work runs/clean_effect] [--max-time 5m] [--seeds 0 1]
        [--limit 0] [--preset 1m] [--quality none|default]

1. `tinylm data clean` the poems (default: no quality rules, which would drop most quatrains: exact and
   near duplicates, normalisation and PII only; --quality default applies the Gopher and C4 defaults).
2. ONE clean held-out split: every 10th kept poem. Its near and exact duplicates are removed from the raw
   training set too, so neither side has seen a held-out poem in another copy.
3. One tokenizer (trained on the raw training poems) for both sides; shards of raw and of cleaned training
   poems; `tinylm pretrain` of the same preset for --max-time per run, for each seed.
4. `tinylm eval bpb` of every model on the held-out poems (bits per byte over all of them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

from cli_steps import run

from tinylm.data.jsonl import jsonl_rows
from tinylm.data.readers import read_file
from tinylm.eval.bpb import eval_bpb

TANG = Path(__file__).resolve().parents[2] / "shared" / "data" / "zh" / "tang_poems.jsonl"
TEMPLATE = r"{title}\n{paragraphs}"


def _write(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    return path


def _splits(raw: Path, cleaned: Path, data: Path) -> tuple[Path, Path, Path]:
    """(raw train, clean train, held-out): held-out is every 10th kept poem, kept out of both trainings."""
    kept = [row for _, row in jsonl_rows(cleaned / "kept.jsonl")]
    held = {k["source"] for i, k in enumerate(kept) if i % 10 == 9}
    dropped = jsonl_rows(cleaned / "dropped.jsonl", allow_empty=True)
    unseen = held | {d["source"] for _, d in dropped if d["duplicate_of"] in held}
    raw_train = [d.text for d in read_file(raw, TEMPLATE.replace("\\n", "\n")) if d.where not in unseen]
    return (
        _write(data / "raw_train.jsonl", raw_train),
        _write(data / "clean_train.jsonl", [k["text"] for k in kept if k["source"] not in held]),
        _write(data / "heldout.jsonl", [k["text"] for k in kept if k["source"] in held]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clean_effect"))
    parser.add_argument("--max-time", default="5m", help="pretraining budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--limit", type=int, default=0, help="first N poems only (0: all)")
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--vocab-size", default="2048")
    parser.add_argument("--quality", choices=["none", "default"], default="none")
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/clean_effect.py " + shlex.join(sys.argv[1:]))
    w = args.work
    raw = TANG
    if args.limit:
        raw = w / "data" / f"tang.head{args.limit}.jsonl"
        raw.parent.mkdir(parents=True, exist_ok=True)
        with open(TANG, encoding="utf-8") as f:
            raw.write_text("".join(itertools.islice(f, args.limit)), encoding="utf-8")
    cmd = [
        "data",
        "clean",
        "--data",
        str(raw),
        "--template",
        TEMPLATE,
        "--out",
        str(w / "clean"),
        "--overwrite",
        "true",
    ]
    run(cmd + (["--quality", "[]"] if args.quality == "none" else []))
    raw_train, clean_train, heldout = _splits(raw, w / "clean", w / "data")
    tok = w / "tokenizer"
    run(["tokenizer", "train", "--data", str(raw_train), "--out", str(tok), "--vocab-size", args.vocab_size])
    scores: dict[str, list[float]] = {"raw": [], "clean": []}
    for side, train in (("raw", raw_train), ("clean", clean_train)):
        shards = w / f"shards-{side}"
        run(
            [
                "data",
                "prepare",
                "--data",
                str(train),
                "--tokenizer",
                str(tok),
                "--out",
                str(shards),
                "--val-fraction",
                "0.02",
            ]
        )
        for seed in args.seeds:
            out = w / f"pretrain-{side}-seed{seed}"
            run(
                [
                    "pretrain",
                    "--shards",
                    str(shards),
                    "--out",
                    str(out),
                    "--model.preset",
                    args.preset,
                    "--train.max-time",
                    args.max_time,
                    "--train.max-steps",
                    "null",
                    "--train.seed",
                    str(seed),
                    "--overwrite",
                    "true",
                ]
            )
            bpb = eval_bpb(str(out / "model"), str(heldout), split="train", val_fraction=0.0)["bpb"]
            scores[side].append(bpb)
            print(f"{side} seed {seed}: {bpb:.4f} bits per byte on {heldout}")
    print("\n| training data | seeds | held-out bits per byte (each) | mean |\n|---|---|---|---:|")
    for side, values in scores.items():
        each = ", ".join(f"{v:.4f}" for v in values)
        print(f"| {side} | {len(values)} | {each} | {sum(values) / len(values):.4f} |")


if __name__ == "__main__":
    main()
