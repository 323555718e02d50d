"""`tinylm dpo`: Direct Preference Optimization on preference pairs, against a frozen reference.

The reference is the starting model and never changes, so its log-probabilities of every pair are computed
once, before training, and stored in <out>/reference_logps.safetensors (a resumed run reads them back): the
reference is not kept in memory and costs nothing per step. Logged per step and at each evaluation on
held-out pairs: the loss, the implicit-reward accuracy, the mean margin and the mean implicit rewards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...data.preferences import load_pair_splits, pair_batches
from ...errors import TinyLMError
from ...models import load_model, require_generative
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..loop import Objective
from ..objectives.pairs import answer_logprobs, dpo_loss, evaluate_dpo, reference_logprobs
from ..stage import Plan, Run, recorded, run_stage


def dpo(
    data: str,
    model: str,
    out: str,
    beta: float = 0.1,
    eval_data: str | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Align a model on preference pairs with DPO (reference log-probabilities precomputed once).

    Args:
        data: Preference JSONL ({"prompt", "chosen", "rejected"}), or a directory with train.jsonl and test.jsonl.
        model: Model to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        beta: Strength β of the implicit KL constraint: larger keeps the policy closer to the reference.
        eval_data: Held-out preference JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        train: Optimizer, schedule and budget (train.batch_size counts pairs).
        context: Longest pair side in tokens (default: the model's max_seq_len); longer pairs are dropped.
        limit: Use only the first this many training pairs.
        eval_limit: Evaluate on only the first this many held-out pairs.
        overwrite: Replace an output directory that holds a different run.
    """
    if beta <= 0:
        raise TinyLMError(f"beta must be positive, got {beta}")
    arguments, train = dict(locals()), train or TrainConfig()
    tok, policy = Tokenizer.load(model), load_model(model)
    require_generative(policy.config, "tinylm dpo")
    context = context or policy.config.max_seq_len
    pairs = load_pair_splits(data, eval_data, tok, context, limit, eval_limit)
    record = recorded(
        arguments,
        data=str(pairs.train_file),
        eval_data=pairs.test_file and str(pairs.test_file),
        train=train,
        context=context,
    )

    def build(run: Run) -> Plan:
        splits = {"train": pairs.train, "eval": pairs.test}
        ref = reference_logprobs(
            run.out / "reference_logps.safetensors", policy.to(run.device), splits, tok.pad_id
        )
        batches = pair_batches(pairs.train, train.batch_size, train.seed, tok.pad_id)
        n_eval = train.eval_batches * train.batch_size

        def batch(index: int) -> dict[str, torch.Tensor]:
            b = batches(index)
            return {**b, "ref": ref["train"][b.pop("rows")]}

        def loss(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            chosen, rejected = answer_logprobs(m, b).chunk(2)
            return dpo_loss(chosen, rejected, b["ref"][:, 0], b["ref"][:, 1], beta)

        def evaluate(m: nn.Module) -> dict[str, float]:
            return evaluate_dpo(m, pairs.test[:n_eval], ref["eval"][:n_eval], tok.pad_id, beta)

        def report(final: nn.Module, result) -> dict[str, Any]:
            scores = evaluate_dpo(final, pairs.test, ref["eval"], tok.pad_id, beta) if pairs.test else {}
            if scores:
                print(f"dpo: held-out implicit-reward accuracy {scores['reward_accuracy']:.4f}")
            return {"train_pairs": len(pairs.train), **{f"heldout_{k}": v for k, v in scores.items()}}

        objective = Objective(batch, loss, evaluate if pairs.test and train.eval_batches else None)
        card = [f"`{model}` aligned with DPO (β = {beta}) on the preference pairs of `{pairs.train_file}`."]
        return Plan(policy, objective, model, report, card)

    return run_stage("dpo", out, record, train, overwrite, build)
