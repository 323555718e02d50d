"""`tinylm pretrain`: a model trained from scratch on token shards, with its family's objective or another
(`tinylm.train.objectives.pretraining`: next token, prefix LM, ...).

Besides what every stage writes (see `tinylm.train.stage`), results.json holds the objective's scores over
the whole validation split (bits per byte for a language model) and a text sample from the final model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ...data.shards import TokenShards
from ...eval.bpb import check_context
from ...infer.engine import Engine
from ...infer.sampling import SamplingParams
from ...models import ModelConfig, build_model
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..objectives.pretraining import PretrainData, objective_for, pretraining
from ..stage import Plan, Run, recorded, run_stage


def pretrain(
    shards: str,
    out: str,
    tokenizer: str | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    objective: str | None = None,
    sample_prompt: str = "",
    sample_tokens: int = 200,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pretrain a language model from scratch on token shards.

    Args:
        shards: Token shards directory (from `tinylm data prepare`).
        out: Run directory. Rerunning the same command there resumes from the last checkpoint.
        tokenizer: Tokenizer directory; default: the one the shards were prepared with (hashes must match).
        model: Model shape (`--model.preset 10m` starts from a preset); vocab_size follows the tokenizer.
        train: Optimizer, schedule, budget and bookkeeping.
        context: Training window length in tokens (default: model.max_seq_len).
        objective: What to learn: clm (next token), prefix (prefix LM), mlm (masked tokens, an encoder's),
            mlm-wwm (masked whole words) or span (T5's span corruption, an encoder-decoder's); default: the
            family's own.
        sample_prompt: Prompt of the text sample written at the end (empty: start a new document).
        sample_tokens: Length of that sample in tokens (0: no sample).
        overwrite: Replace an output directory that holds a different run.
    """
    arguments, train = dict(locals()), train or TrainConfig()
    data = TokenShards.open(shards)
    tokenizer_dir = Path(tokenizer) if tokenizer else data.tokenizer_dir()
    tok = Tokenizer.load(tokenizer_dir)
    data.check_tokenizer(tok)
    config = replace(model or ModelConfig(), vocab_size=tok.vocab_size)
    context = context or config.max_seq_len
    check_context(context, config.max_seq_len)
    train_tokens, val_tokens = data.split("train"), data.split("val")
    has_val = len(val_tokens) > context
    objective = objective_for(objective, config)
    record = recorded(
        arguments,
        model=config,
        train=train,
        context=context,
        objective=objective,
        tokenizer=str(tokenizer_dir),
    )
    record["tokenizer_hash"] = tok.hash

    def build(run: Run) -> Plan:
        held_out = val_tokens if has_val else None
        plan = pretraining(
            objective,
            config,
            PretrainData(
                data,
                train_tokens,
                held_out,
                context,
                train.batch_size,
                train.eval_batches,
                train.seed,
                tok,
                run.device,
            ),
        )
        # An objective that adds tokens (span corruption's sentinels) saves the model with its tokenizer.
        model_tok, model_tok_dir = plan.tokenizer or tok, tokenizer_dir
        if plan.tokenizer is not None:
            model_tok_dir = run.out / "tokenizer"
            if run.dist.is_main:
                model_tok_dir.mkdir(exist_ok=True)
                plan.tokenizer.save(model_tok_dir)
        tokens_per_step = train.batch_size * train.grad_accum * run.dist.world_size * context
        if run.dist.is_main:
            print(f"pretrain: {len(train_tokens):,} training tokens, {tokens_per_step:,} tokens per step")

        def report(final: nn.Module, result) -> dict[str, Any]:
            out: dict[str, Any] = {"objective": objective, "tokens_seen": result.step * tokens_per_step}
            if has_val:
                scores = plan.final(final)
                out.update({f"val_{k}": v for k, v in scores.items()})
                print("pretrain: validation " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
            if sample_tokens and plan.generates:
                params = SamplingParams(
                    max_new_tokens=sample_tokens, temperature=0.8, top_k=50, seed=train.seed
                )
                out["sample"] = Engine(final, model_tok).complete(sample_prompt, params)
                print(f"pretrain: sample\n{out['sample']}")
            return out

        card = [f"Pretrained from scratch on `{shards}` ({len(train_tokens):,} tokens), context {context}."]
        return Plan(build_model(plan.config), plan.objective, model_tok_dir, report, card)

    return run_stage("pretrain", out, record, train, overwrite, build)
