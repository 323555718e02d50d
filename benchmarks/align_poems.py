"""Alignment on Tang quatrains: form-and-rhyme score and exact-form rate before vs after PPO, DPO and GRPO.

    .venv/bin/python benchmarks/align_poems.py [--sft DIR] [--work runs/align] [--seeds 1 2]

Every stage runs through the `tinylm` CLI and its command is printed. Measured on held-out prompts (titles
never seen in training) of `tinylm data make poems`, one sample each at temperature 1 with a fixed seed:
the policy's own distribution, on which KL to the reference is also estimated.

- reward model (`tinylm reward train`) on `tinylm data make preferences`: held-out pairwise accuracy;
- PPO with that learned reward model; DPO on the preference pairs; GRPO on the programmatic poem reward;
  each from the same SFT model, with two training seeds to show the change exceeds run-to-run noise.

Without `--sft`, the starting policy is a stand-in: a small model fine-tuned from scratch on the poems task
(`standin_sft`, the chat template's loss mask on the answers), until `tinylm sft` provides the real one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch.nn.functional as F

from tinylm.cli import main as tinylm
from tinylm.data.chat import IGNORE, collate, encode_sft, length_batches, load_conversations
from tinylm.model import ModelConfig, TinyLM
from tinylm.model.checkpoint import save_checkpoint
from tinylm.tokenizer import Tokenizer
from tinylm.train.config import TrainConfig
from tinylm.train.loop import Task, seed_everything, train
from tinylm.train.rl import eval_reward


def standin_sft(data: str, tokenizer: str, out: Path, model: ModelConfig, config: TrainConfig) -> Path:
    """Train `model` from scratch on the assistant turns of an SFT JSONL file; returns the checkpoint dir."""
    if (out / "model" / "config.json").is_file():
        return out / "model"
    tok = Tokenizer.load(tokenizer)
    examples, _ = encode_sft(load_conversations(data), tok, model.max_seq_len)
    lengths = [len(e.input_ids) for e in examples]
    per_epoch = len(length_batches(lengths, config.batch_size, config.seed))

    def batch(index: int):
        epoch, i = divmod(index, per_epoch)
        rows = length_batches(lengths, config.batch_size, config.seed, epoch)[i]
        return collate([examples[r] for r in rows], tok.pad_id)

    def loss(m, b):
        logits = m(b["input_ids"], b["attention_mask"])
        return F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=IGNORE)

    seed_everything(config.seed)
    lm = TinyLM(model)
    train(lm, Task(batch=batch, loss=loss), config, out, desc="stand-in sft")
    return save_checkpoint(lm.eval(), out / "model", tokenizer)


def run(args: list[str]) -> float:
    """Run one tinylm command, print it, return its wall time in seconds."""
    print("$ tinylm " + shlex.join(args), flush=True)
    start = time.perf_counter()
    if tinylm(args) != 0:
        raise SystemExit(f"failed: tinylm {shlex.join(args)}")
    return time.perf_counter() - start


def evaluate(model: Path, data: Path, reward: str, reference: Path, n: int, max_new_tokens: int) -> dict:
    """Held-out verifiable scores of `model` (one sample per prompt, temperature 1, seed 0), printed with the command."""
    args = ["eval", "reward", "--model", str(model), "--data", str(data), "--reward", reward]
    args += ["--reference", str(reference), "--n", str(n), "--max_new_tokens", str(max_new_tokens)]
    print("$ tinylm " + shlex.join(args), flush=True)
    return eval_reward(str(model), str(data), reward, str(reference), n, max_new_tokens)


CPU = "--train.device cpu --train.eval_every 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/align", help="Working directory for data and runs.")
    parser.add_argument("--sft", default=None, help="SFT poem model (default: train the stand-in).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=200, help="Held-out prompts scored.")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--methods", nargs="+", default=["ppo", "dpo", "grpo"])
    parser.add_argument("--rm_steps", type=int, default=200)
    parser.add_argument("--rm_lr", type=float, default=1e-3)
    parser.add_argument("--kl_coef", type=float, default=0.05, help="PPO's KL penalty coefficient.")
    parser.add_argument(
        "--ppo_steps", type=int, default=24, help="A multiple of 4 (2 epochs x 2 minibatches)."
    )
    parser.add_argument("--dpo_steps", type=int, default=40)
    parser.add_argument("--grpo_steps", type=int, default=16)
    args = parser.parse_args()
    work = Path(args.work)
    poems, prefs = work / "data" / "poems", work / "data" / "prefs"
    for task, where in (("poems", poems), ("preferences", prefs)):
        if not (where / "test.jsonl").is_file():
            run(["data", "make", task, "--out", str(where)])
    sft = Path(args.sft) if args.sft else None
    if sft is None:
        tok = work / "tok"
        if not (tok / "tokenizer.json").is_file():
            run(
                shlex.split(f"tokenizer train --data tang --out {tok} --vocab_size 3000")
                + ["--template", "{title}\n{paragraphs}"]
            )
        print("stand-in SFT: d_model 128, 4 layers, from scratch on the poems task, 600 steps or 15 min")
        model = ModelConfig(vocab_size=3000, d_model=128, n_layer=4, n_head=4, max_seq_len=128)
        config = TrainConfig(
            lr=3e-3,
            warmup_steps=30,
            batch_size=32,
            max_steps=600,
            max_time="15m",
            checkpoint_every=100,
            eval_every=0,
            device="cpu",
        )
        sft = standin_sft(str(poems / "train.jsonl"), str(tok), work / "sft", model, config)
    test, mnt = poems / "test.jsonl", args.max_new_tokens
    table = [("SFT (start)", None, evaluate(sft, test, "poem", sft, args.n, mnt), 0.0)]

    rm = work / "rm"
    if "ppo" in args.methods:
        seconds = run(
            shlex.split(
                f"reward train --data {prefs} --model {sft} --out {rm} {CPU} --train.warmup_steps 5 --train.max_steps {args.rm_steps} "
                f"--train.batch_size 16 --train.lr {args.rm_lr} --eval_limit 600"
            )
        )
        acc = json.loads((rm / "results.json").read_text())["heldout_accuracy"]
        print(f"reward model: held-out pairwise accuracy {acc:.4f} (600 held-out pairs), {seconds:.0f} s")
    rl = f"{CPU} --train.warmup_steps 2 --train.checkpoint_every 8"
    stages = {
        "ppo": f"ppo --data {poems} --model {sft} --reward_model {rm / 'model'} --reward poem {rl} "
        f"--train.max_steps {args.ppo_steps} --train.batch_size 16 --train.lr 3e-4 --ppo.max_new_tokens {mnt} "
        f"--ppo.eval_prompts 0 --ppo.kl_coef {args.kl_coef}",
        "dpo": f"dpo --data {prefs} --model {sft} {CPU} --train.warmup_steps 5 --train.max_steps {args.dpo_steps} --train.batch_size 16 "
        "--train.lr 3e-4 --beta 0.1 --limit 2000 --eval_limit 300",
        "grpo": f"grpo --data {poems} --model {sft} --reward poem {rl} --train.max_steps {args.grpo_steps} "
        f"--train.batch_size 32 --train.lr 5e-4 --grpo.group_size 8 --grpo.max_new_tokens {mnt} --grpo.eval_prompts 0",
    }
    for method in (m for m in args.methods if m in stages):
        for seed in args.seeds:
            out = work / f"{method}-seed{seed}"
            seconds = run(shlex.split(f"{stages[method]} --out {out} --train.seed {seed}"))
            table.append(
                (method.upper(), seed, evaluate(out / "model", test, "poem", sft, args.n, mnt), seconds)
            )

    print(
        f"\nheld-out poem prompts: {args.n}, one sample each at temperature 1 (seed 0); KL in nats per completion"
    )
    print(f"{'model':<12} {'seed':>4} {'form+rhyme':>10} {'exact form':>10} {'KL to SFT':>9} {'time s':>7}")
    for name, seed, m, seconds in table:
        print(
            f"{name:<12} {seed or '-':>4} {m['reward']:>10.4f} {m['exact_form']:>10.4f} {m['kl']:>9.3f} {seconds:>7.0f}"
        )


if __name__ == "__main__":
    main()
