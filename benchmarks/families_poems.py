"""The Transformer families at equal size and equal CPU time: which pretraining completes a poem line best?

The T5 paper found, at equal compute, an encoder-decoder with a denoising objective ahead of a prefix LM,
and that ahead of a causal decoder. Here on 全唐诗: poems whose index is a multiple of 50 are held out,
the rest train one tokenizer and one set of shards, and every variant is pretrained from scratch with the
same non-embedding parameter budget for the same training wall time:

| variant | family | objective |
|---|---|---|
| causal | llama | next token (clm) |
| prefix | llama | prefix LM on random splits |
| encoder | bert | masked LM (15 %, 80/10/10) |
| enc-dec | t5 | span corruption (15 %, mean span 3) |

Downstream task (zero-shot, straight after pretraining): given the first half of a held-out couplet
("床前明月光，") produce the second ("疑是地上霜"), told only its length in tokens. The decoders and T5
decode greedily (T5 from "first half，<extra_id_0>", its pretraining format); the encoder fills that many
[MASK]s left to right, one forward pass per token. Scored by exact match and character accuracy
(position by position), 2 seeds each.

    .venv/bin/python benchmarks/families_poems.py --max-time 120s --seeds 2
    .venv/bin/python benchmarks/families_poems.py --max-time 10s --seeds 1 --pairs 20   # smoke

With `--budget steps` the machine need not stay quiet for hours: a short timed run of each variant, alone,
measures its steps per second (`--calibrate`), and every real run then trains for the steps that rate gives in
`--max-time`. Equal CPU time still holds (as measured alone), and what a run learns no longer depends on
what else runs beside it:

    .venv/bin/python benchmarks/families_poems.py --budget steps --calibrate 90s --max-time 10m --seeds 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINYLM = str(Path(sys.executable).with_name("tinylm"))
POEMS = ROOT.parent / "shared" / "data" / "zh" / "tang_poems.jsonl"

D_MODEL, HEADS, CONTEXT = 192, 4, 128
VARIANTS = {
    # name: (family, objective, shape): about 1.8M non-embedding parameters each (printed below)
    "causal": ("llama", "clm", {"n_layer": 4, "d_ff": 512}),
    "prefix": ("llama", "prefix", {"n_layer": 4, "d_ff": 512}),
    "encoder": ("bert", "mlm", {"n_layer": 4, "d_ff": 768}),
    # tied like the others, so that total parameters are equal too (T5 v1.0 ties and rescales its head)
    "enc-dec": ("t5", "span", {"n_layer": 2, "n_decoder_layer": 2, "d_ff": 384, "tie_embeddings": True}),
}


COMMON = ["--train.lr", "0.003", "--train.warmup_steps", "30", "--train.batch_size", "16",
          "--train.eval_every", "0", "--sample_tokens", "0", "--overwrite", "true"]  # fmt: skip


def pretrain_cmd(name: str, shards: Path, out: Path) -> list[str]:
    """The `tinylm pretrain` call of one variant, without its budget and seed."""
    family, objective, shape = VARIANTS[name]
    cmd = [TINYLM, "pretrain", "--shards", str(shards), "--out", str(out), "--objective", objective,
           "--model.family", family, "--model.d_model", str(D_MODEL), "--model.n_head", str(HEADS),
           "--model.max_seq_len", str(CONTEXT), *COMMON]  # fmt: skip
    for key, value in shape.items():
        cmd += [f"--model.{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return cmd


def budget_flags(max_time: str, steps: int | None) -> list[str]:
    if steps is None:
        return ["--train.max_time", max_time, "--train.max_steps", "null"]
    return ["--train.max_time", "null", "--train.max_steps", str(steps)]


def calibrate(args, work: Path, shards: Path) -> dict[str, int]:
    """Steps each variant makes in --max-time, from a short timed run of it alone (kept in calibration.json)."""
    from tinylm.train.config import parse_duration

    path = work / "calibration.json"
    rates = json.loads(path.read_text()) if path.exists() else {}
    for name in args.variants.split(","):
        if name not in rates:
            out = work / f"{name}-calibration"
            sh([*pretrain_cmd(name, shards, out), *budget_flags(args.calibrate, None), "--train.seed", "0"])
            result = json.loads((out / "results.json").read_text())
            rates[name] = result["step"] / result["train_seconds"]
            path.write_text(json.dumps(rates, indent=1))
    steps = {name: round(rates[name] * parse_duration(args.max_time)) for name in args.variants.split(",")}
    print(
        "steps per second, measured alone:",
        {k: round(v, 3) for k, v in rates.items()},
        "->",
        steps,
        flush=True,
    )
    return steps


def sh(cmd: list[str]) -> None:
    print("$", " ".join(["tinylm", *cmd[1:]] if cmd[0] == TINYLM else cmd), flush=True)
    subprocess.run(cmd, check=True)


def split_poems(work: Path) -> list[dict]:
    """Write the training poems to work/train.jsonl; return the held-out ones."""
    rows = [json.loads(line) for line in POEMS.read_text(encoding="utf-8").splitlines()]
    train, test = [], []
    for i, row in enumerate(rows):
        (test if i % 50 == 0 else train).append(row)
    (work / "train.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train), encoding="utf-8"
    )
    return test


def couplets(poems: list[dict], limit: int) -> list[tuple[str, str]]:
    """(first half with its comma, second half without the stop) of regular 5- or 7-character couplets."""
    pairs = []
    for poem in poems:
        for line in poem["paragraphs"]:
            if line.count("，") == 1 and line.endswith("。") and line.count("。") == 1:
                first, second = line[:-1].split("，")
                if len(first) == len(second) in (5, 7):
                    pairs.append((first + "，", second))
                    break  # one couplet per poem, so poets and poems weigh equally
    return pairs[:limit]


def complete(model, tok, family: str, pairs: list[tuple[str, str]], lengths: list[int]) -> list[str]:
    """The model's second half for each first half, as many tokens long as the true one."""
    if family == "bert":
        return fill_masks(model, tok, [a for a, _ in pairs], lengths)
    from tinylm.infer.engine import Engine
    from tinylm.infer.sampling import SamplingParams

    # T5 writes its sentinel first, then the span: one token more.
    params = [
        SamplingParams(temperature=0.0, max_new_tokens=n + (family == "t5"), ignore_eos=True) for n in lengths
    ]
    prompts = [a + "<extra_id_0>" if family == "t5" else a for a, _ in pairs]
    seqs = Engine(model, tok, max_batch_size=32).generate(prompts, params)
    return [s.text for s in seqs]


@torch.inference_mode()
def fill_masks(model, tok, firsts: list[str], lengths: list[int]) -> list[str]:
    """Fill as many masks as `lengths` says after each first half, left to right, each token from one
    bidirectional forward pass; a line ends in "。" and EOS, as documents do in the packed pretraining windows.
    Lines whose first half and answer have the same token lengths go through together."""
    answers = [""] * len(firsts)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (first, n) in enumerate(zip(firsts, lengths, strict=True)):
        groups.setdefault((len(tok.encode(first)), n), []).append(i)
    for (start, n), rows in groups.items():
        ids = torch.tensor(
            [[*tok.encode(firsts[i]), *[tok.mask_id] * n, *tok.encode("。"), tok.eos_id] for i in rows]
        )
        for t in range(start, start + n):
            ids[:, t] = model(ids)[:, t].argmax(-1)
        for row, i in enumerate(rows):
            answers[i] = tok.decode(ids[row, start : start + n].tolist(), skip_special_tokens=True)
    return answers


@torch.inference_mode()
def answer_logprobs(model, tok, family: str, first: str, answer: str) -> tuple[float, int, int]:
    """Teacher-forced: (log-probability of the answer's tokens, how many, how many were the top choice), each
    token predicted from the first half and the true tokens before it. The encoder fills its masks in that
    order too (the answer's later tokens still masked), so all four read the answer left to right."""
    a, b = tok.encode(first), tok.encode(answer)
    if family == "bert":
        tail = [*tok.encode("。"), tok.eos_id]
        rows = torch.tensor([[*a, *b[:t], *[tok.mask_id] * (len(b) - t), *tail] for t in range(len(b))])
        logits = model(rows)[torch.arange(len(b)), len(a) + torch.arange(len(b))]
    elif family == "t5":
        sentinel = tok.token_to_id("<extra_id_0>")
        target = [sentinel, *b]
        decoder = torch.tensor([[model.config.decoder_start_id, *target[:-1]]])
        logits = model(torch.tensor([[*tok.encode(first + "<extra_id_0>")]]), decoder_input_ids=decoder)[
            0, 1:
        ]
    else:
        ids = torch.tensor([[*a, *b]])
        prefix = torch.tensor([len(a)]) if model.config.prefix_lm else None
        logits = model(ids, prefix=prefix)[0, len(a) - 1 : -1]
    logp = logits.float().log_softmax(-1)
    truth = torch.tensor(b)
    return float(logp[torch.arange(len(b)), truth].sum()), len(b), int((logp.argmax(-1) == truth).sum())


def forced_scores(model, tok, family: str, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Bits per answer character and top-1 token accuracy, teacher-forced, over all pairs."""
    logp, tokens, top = 0.0, 0, 0
    for first, answer in pairs:
        lp, n, k = answer_logprobs(model, tok, family, first, answer)
        logp, tokens, top = logp + lp, tokens + n, top + k
    chars = sum(len(b) for _, b in pairs)
    return {"answer_bits_per_char": -logp / math.log(2) / chars, "forced_token_acc": top / tokens}


def score(pairs: list[tuple[str, str]], answers: list[str]) -> dict[str, float]:
    exact = sum(a == b for (_, b), a in zip(pairs, answers, strict=True))
    chars = sum(
        sum(x == y for x, y in zip(a, b, strict=False)) for (_, b), a in zip(pairs, answers, strict=True)
    )
    return {"exact": exact / len(pairs), "char_acc": chars / sum(len(b) for _, b in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-families"))
    parser.add_argument("--max-time", default="120s", help="training wall time of every run")
    parser.add_argument(
        "--budget", choices=["time", "steps"], default="time",
        help="time: every run trains for --max-time; steps: for the steps its calibrated rate gives in it",
    )  # fmt: skip
    parser.add_argument(
        "--calibrate", default="90s", help="with --budget steps: timed run per variant, alone"
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=400, help="held-out couplets to complete")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--score-only", action="store_true", help="rescore the runs already in --work without training"
    )
    args = parser.parse_args()
    from tinylm.models import ModelConfig, load_model, param_counts
    from tinylm.tokenizer import Tokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    pairs = couplets(split_poems(work), args.pairs)
    tokenizer, shards = work / "tokenizer", work / "shards"
    if not args.score_only:
        sh([TINYLM, "tokenizer", "train", "--data", str(work / "train.jsonl"), "--out", str(tokenizer),
        "--vocab_size", "6000", "--template", "{title}\n{paragraphs}"])  # fmt: skip
        sh([TINYLM, "data", "prepare", "--data", str(work / "train.jsonl"), "--tokenizer", str(tokenizer),
        "--out", str(shards), "--val_fraction", "0.02", "--template", "{title}\n{paragraphs}"])  # fmt: skip
    tok = Tokenizer.load(tokenizer)
    lengths = [len(tok.encode(b)) for _, b in pairs]

    steps = calibrate(args, work, shards) if args.budget == "steps" and not args.score_only else {}
    rows = []
    for name in args.variants.split(","):
        family, _, shape = VARIANTS[name]
        config = ModelConfig(family=family, d_model=D_MODEL, n_head=HEADS, max_seq_len=CONTEXT,
                             vocab_size=tok.vocab_size, **shape)  # fmt: skip
        n_params = param_counts(config).blocks
        for seed in range(args.seeds):
            out = work / f"{name}-{seed}"
            if not args.score_only:
                sh([*pretrain_cmd(name, shards, out), *budget_flags(args.max_time, steps.get(name)),
                    "--train.seed", str(seed)])  # fmt: skip
            result = json.loads((out / "results.json").read_text())
            model = load_model(out / "model").eval()
            model_tok = Tokenizer.load(out / "model")
            started = time.perf_counter()
            answers = complete(model, model_tok, family, pairs, lengths)
            seconds = time.perf_counter() - started
            scores = {**score(pairs, answers), **forced_scores(model, model_tok, family, pairs)}
            rows.append({"variant": name, "seed": seed, "params": n_params, "steps": result["step"],
                         "tokens": result.get("tokens_seen"), **scores, "eval_s": seconds,
                         "example": f"{pairs[0][0]}{answers[0]}"})  # fmt: skip
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)

    budget = args.max_time if not steps else f"{args.max_time} as steps at the rate measured alone {steps}"
    print(f"\n{len(pairs)} held-out couplets; training budget {budget} per run; "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} cores\n")  # fmt: skip
    print("| variant | non-embedding params | steps (per seed) | exact match | char accuracy (free-running) "
          "| answer bits per char (teacher-forced) | top-1 token accuracy (teacher-forced) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        mine = [r for r in rows if r["variant"] == name]

        def cells(key: str, mine=mine) -> str:
            values = [r[key] for r in mine]
            return ", ".join(f"{v:.3f}" for v in values) + f" (mean {statistics.mean(values):.3f})"

        steps = "/".join(str(r["steps"]) for r in mine)
        print(f"| {name} | {mine[0]['params'] / 1e6:.2f}M | {steps} | {cells('exact')} | {cells('char_acc')} "
              f"| {cells('answer_bits_per_char')} | {cells('forced_token_acc')} |")  # fmt: skip
    print("\ncommand:", " ".join([".venv/bin/python", "benchmarks/families_poems.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
