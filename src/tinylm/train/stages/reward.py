"""`tinylm reward train`: a reward model learned from preference pairs with the Bradley–Terry loss.

The model is the policy's body with a scalar head read at the last token of the conversation
(`tinylm.models.heads.RewardModel`); what it is worth is its pairwise accuracy on held-out pairs (prompts
never seen in training), reported at each evaluation and in results.json. <out>/model holds the body and
reward_head.safetensors; `tinylm.eval.reward_model.RewardScorer` scores conversations with it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...data.preferences import load_pair_splits, pair_batches
from ...eval.reward_model import pair_scores, pairwise_accuracy
from ...models import load_model
from ...models.heads import RewardModel
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..loop import Objective
from ..objectives.pairs import bradley_terry_loss
from ..stage import Plan, Run, recorded, run_stage


def reward_train(
    data: str,
    model: str,
    out: str,
    eval_data: str | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a reward model on preference pairs with the Bradley–Terry loss; report held-out pairwise accuracy.

    Args:
        data: Preference JSONL ({"prompt", "chosen", "rejected"}), or a directory with train.jsonl and test.jsonl.
        model: Model to start from (usually the SFT model); its body gets a new scalar head.
        out: Run directory; rerunning the same command resumes.
        eval_data: Held-out preference JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        train: Optimizer, schedule and budget (train.batch_size counts pairs).
        context: Longest pair side in tokens (default: the model's max_seq_len); longer pairs are dropped.
        limit: Use only the first this many training pairs.
        eval_limit: Evaluate on only the first this many held-out pairs.
        overwrite: Replace an output directory that holds a different run.
    """
    arguments, train = dict(locals()), train or TrainConfig()
    tok, body = Tokenizer.load(model), load_model(model)
    context = context or body.config.max_seq_len
    pairs = load_pair_splits(data, eval_data, tok, context, limit, eval_limit)
    record = recorded(
        arguments,
        data=str(pairs.train_file),
        eval_data=pairs.test_file and str(pairs.test_file),
        train=train,
        context=context,
        tokenizer_hash=tok.hash,
    )

    def build(run: Run) -> Plan:
        held_out = pairs.test

        def evaluate(m: nn.Module) -> dict[str, float]:
            return pairwise_accuracy(m, held_out[: train.eval_batches * train.batch_size], tok.pad_id)

        def report(final: nn.Module, result) -> dict[str, Any]:
            scores = pairwise_accuracy(final, held_out, tok.pad_id) if held_out else {}
            if scores:
                print(f"reward: held-out accuracy {scores['accuracy']:.4f} over {len(held_out)} pairs")
            return {"train_pairs": len(pairs.train), **{f"heldout_{k}": v for k, v in scores.items()}}

        batches = pair_batches(pairs.train, train.batch_size, train.seed, tok.pad_id)
        loss = lambda m, b: bradley_terry_loss(*pair_scores(m, b))  # noqa: E731
        objective = Objective(batches, loss, evaluate if held_out and train.eval_batches else None)
        card = [f"A reward model: `{model}`'s body with a scalar head, trained on `{pairs.train_file}`."]
        return Plan(RewardModel(body), objective, model, report, card)

    return run_stage("reward", out, record, train, overwrite, build)
