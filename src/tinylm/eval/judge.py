"""Preference pairs from a model's own answers, judged by a verifiable reward.

InstructGPT's labellers ranked several answers of the SFT model to each prompt, and the reward model learned
from those rankings. Here the judge is a reward a user can check (`tinylm.tasks.rewards`: poem form and
rhyme, arithmetic answers, or any callable): for each prompt, `samples` answers are drawn from the model, and the best and
the worst by that reward become chosen and rejected. Pairs built this way are on the policy's own
distribution, which is what PPO's reward model will be asked to score and DPO will move; pairs built by
damaging real poems (`tinylm data make preferences`) teach the difference between a real poem and its
damaged copy, which the policy's samples rarely show.

Prompts whose answers all score the same carry no preference and are skipped (and counted). The train and
test splits of DATA stay apart: pairs for held-out prompts go to test.jsonl.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from ..data.prompts import EncodedPrompt, encode_prompts
from ..errors import TinyLMError
from ..infer.engine import sample
from ..infer.sampling import SamplingParams
from ..io import check_out_dir, read_json, to_plain
from ..models import load_model
from ..tasks.make import write_splits
from ..tasks.rewards import Reward, check_rows, reward_name, score
from ..tokenizer import Tokenizer


def judge_prompts(
    policy,
    tokenizer,
    prompts: list[EncodedPrompt],
    reward: str | Reward,
    samples: int,
    params: SamplingParams,
) -> tuple[list[dict], int]:
    """(pair rows, prompts skipped because every answer scored the same) for `prompts`; chunk k of 16
    prompts is sampled with seed `params.seed + k · 16 · samples` onwards, row by row."""
    rows, ties = [], 0
    chunks = range(0, len(prompts), 16)  # 16 prompts x `samples` answers per engine batch
    for start in tqdm(chunks, desc="judging", unit="batch", disable=None):
        chunk = prompts[start : start + 16]
        ids = [p.ids for p in chunk for _ in range(samples)]
        seqs = sample(policy, tokenizer, ids, replace(params, seed=params.seed + start * samples))
        for i, p in enumerate(chunk):
            answers = [s.text for s in seqs[i * samples : (i + 1) * samples]]
            rewards = score(reward, answers, [p.fields] * samples)
            scored = sorted(zip(rewards, answers, strict=True), key=lambda t: t[0])
            (low, rejected), (high, chosen) = scored[0], scored[-1]
            if high == low:
                ties += 1
                continue
            rows.append(
                {
                    "prompt": p.messages,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    **p.fields,
                    "chosen_reward": high,
                    "rejected_reward": low,
                }
            )
    return rows, ties


def judge_pairs(
    model: str,
    data: str,
    out: str,
    reward: str | Reward = "poem",
    samples: int = 4,
    sampling: SamplingParams | None = None,
    limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Sample answers to DATA's prompts from MODEL and keep the best and the worst of each as a preference pair.

    Writes OUT/train.jsonl and OUT/test.jsonl (`{"prompt", "chosen", "rejected"}` rows, with the prompt
    row's fields and both rewards) and OUT/manifest.json, and prints the counts.

    Args:
        model: Checkpoint directory whose answers are judged (usually the SFT model RL will start from).
        data: Task directory with train.jsonl and test.jsonl (e.g. from `tinylm data make poems`).
        out: Output directory.
        reward: The judge: a registered reward (poem, arithmetic, ...) or, from Python, any callable.
        samples: Answers drawn per prompt (at least 2).
        sampling: How answers are sampled (temperature 1 samples the model's own distribution; seed 0 when
            none is given, so the pairs are reproducible).
        limit: Judge at most this many prompts of each split.
        overwrite: Replace a non-empty OUT.
    """
    if samples < 2:
        raise TinyLMError(f"samples must be at least 2 (a pair needs two answers), got {samples}")
    params = sampling or SamplingParams()
    params = replace(params, seed=0 if params.seed is None else params.seed)
    check_out_dir(out, None, overwrite)
    tok, policy = Tokenizer.load(model), load_model(model)
    splits, counts = {}, {}
    for split in ("train", "test"):
        path = Path(data) / f"{split}.jsonl"
        if not path.is_file():
            raise TinyLMError(f"{data} has no {split}.jsonl; give a task directory (tinylm data make ...)")
        prompts = encode_prompts(path, tok, policy.config.max_seq_len, params.max_new_tokens)[:limit]
        check_rows(reward, prompts)
        split_params = replace(params, seed=params.seed + (0 if split == "train" else 1_000_003))
        splits[split], ties = judge_prompts(policy, tok, prompts, reward, samples, split_params)
        counts[split], counts[f"{split}_ties"] = len(splits[split]), ties
        print(
            f"{split}: {len(splits[split]):,} pairs from {len(prompts):,} prompts ({ties:,} all scored alike)"
        )
    manifest = {
        "task": "judged pairs",
        "model": model,
        "data": data,
        "reward": reward_name(reward),
        "samples": samples,
        "sampling": to_plain(params),
        "rows": counts,
    }
    write_splits(out, splits, manifest)
    return counts


def summarize(out: str) -> str:
    """One line on a judged-pairs directory, for the pipeline's report."""
    m = read_json(Path(out) / "manifest.json")
    rows = m["rows"]
    return (
        f"Pairs judged by the `{m['reward']}` reward from `{m['model']}`'s own answers ({m['samples']} a prompt): "
        f"{rows['train']:,} training and {rows['test']:,} held-out pairs; "
        f"{rows['train_ties'] + rows['test_ties']:,} prompts skipped, their answers all scored alike."
    )
