"""`tinylm pretrain`: a language model trained from scratch on token shards, with the next-token loss
(`clm`, a decoder's) or the masked-token loss (`mlm`, an encoder's; `tinylm.train.objectives.mlm`).

Besides what every stage writes (see `tinylm.train.stage`), results.json holds the validation bits per
byte over the whole validation split and a text sample from the final model (clm), or the masked-LM loss
and accuracy over the whole validation split with fixed masks (mlm).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ...data.shards import RandomWindows, TokenShards
from ...errors import TinyLMError
from ...eval.bpb import check_context, shards_bpb
from ...infer.engine import Engine
from ...infer.sampling import SamplingParams
from ...models import ModelConfig, build_model, get_family, model_flops_per_token
from ...models.registry import require_generative
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..loop import Objective
from ..objectives.lm import causal_lm_loss, window_loss
from ..objectives.mlm import MaskedWindows, Masker, heldout_mlm, masked_window_loss, mlm_loss
from ..stage import Plan, Run, recorded, run_stage


def pretrain(
    shards: str,
    out: str,
    tokenizer: str | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    context: int | None = None,
    objective: Literal["clm", "mlm"] | None = None,
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
        objective: clm (next token, for a decoder) or mlm (masked tokens, for an encoder); default: the
            family's own (clm for llama, mlm for bert).
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
    generates = get_family(config.family).generates
    objective = objective or ("clm" if generates else "mlm")
    if objective == "clm":
        require_generative(config, "pretrain --objective clm")
    elif generates:
        raise TinyLMError(
            f"pretrain --objective mlm needs an encoder (--model.family bert); {config.family} is a decoder"
        )
    masker = Masker(tok) if objective == "mlm" else None
    context = context or config.max_seq_len
    check_context(context, config.max_seq_len)
    train_tokens, val_tokens = data.split("train"), data.split("val")
    has_val = len(val_tokens) > context
    record = recorded(
        arguments,
        model=config,
        train=train,
        context=context,
        tokenizer=str(tokenizer_dir),
        objective=objective,
    )
    record["tokenizer_hash"] = tok.hash

    def build(run: Run) -> Plan:
        tokens_per_step = train.batch_size * train.grad_accum * run.dist.world_size * context
        if run.dist.is_main:
            print(f"pretrain: {len(train_tokens):,} training tokens, {tokens_per_step:,} tokens per step")

        def report(final: nn.Module, result) -> dict[str, Any]:
            out: dict[str, Any] = {"objective": objective, "tokens_seen": result.step * tokens_per_step}
            if has_val and masker is not None:
                scores = heldout_mlm(
                    final, val_tokens, context, train.batch_size, masker, train.seed, run.device
                )
                out.update({f"val_{k}": v for k, v in scores.items()})
                print(
                    f"pretrain: validation MLM accuracy {scores['mlm_accuracy']:.4f}, loss "
                    f"{scores['mlm_loss']:.4f} over {scores['masked_tokens']:,} masked tokens"
                )
            elif has_val:
                scores = shards_bpb(final, data, "val", context, train.batch_size, run.device)
                out.update({f"val_{k}": v for k, v in scores.items()})
                print(
                    f"pretrain: validation bits per byte {scores['bpb']:.4f} over {scores['bytes']:,} bytes"
                )
            if sample_tokens and masker is None:
                params = SamplingParams(
                    max_new_tokens=sample_tokens, temperature=0.8, top_k=50, seed=train.seed
                )
                out["sample"] = Engine(final, tok).complete(sample_prompt, params)
                print(f"pretrain: sample\n{out['sample']}")
            return out

        if masker is None:
            batches = RandomWindows(train_tokens, context, train.batch_size, seed=train.seed)
            evaluate = window_loss(
                val_tokens, context, train.batch_size, train.eval_batches, train.seed + 1, run.device
            )
            loss = causal_lm_loss
        else:
            batches = MaskedWindows(train_tokens, context, train.batch_size, masker, seed=train.seed)
            evaluate = masked_window_loss(
                val_tokens, context, train.batch_size, train.eval_batches, masker, train.seed + 1, run.device
            )
            loss = mlm_loss
        objective_ = Objective(
            batches.batch,
            loss,
            evaluate if has_val and train.eval_batches else None,
            flops_per_token=model_flops_per_token(config, context),
        )
        card = [
            f"Pretrained from scratch on `{shards}` ({len(train_tokens):,} tokens), context {context}, "
            f"objective {objective}."
        ]
        return Plan(build_model(config), objective_, tokenizer_dir, report, card)

    return run_stage("pretrain", out, record, train, overwrite, build)
