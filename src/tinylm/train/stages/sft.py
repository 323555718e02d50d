"""`tinylm sft`: supervised fine-tuning on conversations, with the loss on the assistant's tokens only.

Chat JSONL (`tinylm.data.chat`) is rendered with the model's own chat template and batched by length;
which parameters learn is the fine-tuning mode (`tinylm.train.finetune`: full, partial, frozen or LoRA).
LoRA runs also write the adapters alone to <out>/adapter, in PEFT's layout. results.json adds the data
counts and the held-out loss before and after.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from ...data.batching import LengthBatches
from ...data.chat import collate, encode_sft, load_conversations
from ...data.splits import split_files
from ...errors import TinyLMError
from ...io import to_plain
from ...models import load_model, model_flops_per_token
from ...models.lora import LoraConfig
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..finetune import Mode, prepare_finetune
from ..loop import Objective
from ..objectives.lm import heldout_loss, sft_loss
from ..stage import Plan, Run, recorded, run_stage


def sft(
    model: str,
    data: str,
    out: str,
    test: str | None = None,
    mode: Mode = "full",
    lora: LoraConfig | None = None,
    last_blocks: int = 1,
    freeze_embeddings: bool = True,
    freeze_blocks: int = 0,
    train: TrainConfig | None = None,
    context: int | None = None,
    overflow: Literal["truncate", "drop"] = "truncate",
    limit: int | None = None,
    merge: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune a model on conversations (loss on assistant turns only), fully, partially, frozen or with LoRA.

    Args:
        model: Model directory to start from (ours, an imported one, or a Hugging Face one with tokenizer files).
        data: SFT JSONL ({"messages": [...]} or {"prompt", "completion"} rows), or a directory holding
            train.jsonl (and test.jsonl, used as the held-out set) as `tinylm data make` writes it.
        out: Run directory. Rerunning the same command there resumes from the last checkpoint.
        test: Held-out SFT JSONL for the evaluation loss (default: DATA/test.jsonl when DATA is a directory).
        mode: full, partial (last blocks + final norm + an untied head), frozen (embeddings and / or first
            blocks frozen) or lora.
        lora: LoRA adapters (mode lora): rank, alpha, dropout, targets.
        last_blocks: partial: how many of the last blocks learn.
        freeze_embeddings: frozen: freeze the token embeddings (and a tied LM head).
        freeze_blocks: frozen: how many of the first blocks to freeze.
        train: Optimizer, schedule and budget (fine-tuning usually wants a lower train.lr than pretraining).
        context: Longest example in tokens (default: the model's max_seq_len).
        overflow: Longer examples are truncated (kept if an assistant token survives) or dropped; both counted.
        limit: Use only the first this many training (and held-out) conversations.
        merge: LoRA: also write the merged model to OUT/model (the adapters always go to OUT/adapter).
        overwrite: Replace an output directory that holds a different run.
    """
    arguments, train, lora = dict(locals()), train or TrainConfig(), lora or LoraConfig()
    train_file, test_file = split_files(data, test)
    tok, base = Tokenizer.load(model), load_model(model)
    context = context or base.config.max_seq_len
    if not 1 < context <= base.config.max_seq_len:
        raise TinyLMError(f"context must be in [2, {base.config.max_seq_len}] for this model, got {context}")
    examples, counts = encode_sft(load_conversations(train_file)[:limit], tok, context, overflow)
    held_out, test_counts = [], None
    if test_file:
        held_out, test_counts = encode_sft(load_conversations(test_file)[:limit], tok, context, overflow)
    record = recorded(
        arguments,
        data=str(train_file),
        test=test_file and str(test_file),
        lora=lora,
        train=train,
        context=context,
    )

    def build(run: Run) -> Plan:
        targets = prepare_finetune(base, mode, last_blocks, freeze_embeddings, freeze_blocks, lora)
        lengths = [len(e.input_ids) for e in examples]
        batches = LengthBatches(
            lengths,
            train.batch_size,
            train.seed,
            lambda rows: collate([examples[i] for i in rows], tok.pad_id),
        )
        prefix_lm = bool(base.config.prefix_lm)
        evaluate = heldout_loss(
            held_out, train.batch_size, train.eval_batches, tok.pad_id, run.device, prefix_lm
        )
        with torch.no_grad():
            before = evaluate(base.to(run.device).eval())["val_loss"] if evaluate else None
        base.train()
        if run.dist.is_main:
            print(
                f"sft: {counts.kept:,} examples ({counts.truncated:,} truncated, {counts.dropped_too_long:,} "
                f"longer than {context} tokens dropped), {batches.per_epoch:,} batches per epoch"
            )

        def report(final: nn.Module, result) -> dict[str, Any]:
            epochs = result.step * train.grad_accum * run.dist.world_size / batches.per_epoch
            return {
                "mode": mode,
                "lora_targets": targets,
                "train_examples": to_plain(counts),
                "test_examples": to_plain(test_counts),
                "epochs": epochs,
                "val_loss_before": before,
                "val_loss_after": result.eval_metrics.get("val_loss"),
            }

        flops = model_flops_per_token(base.config, context) if mode == "full" else None
        objective = Objective(
            batches,
            partial(sft_loss, prefix_lm=prefix_lm),
            evaluate,
            flops,
            tokens=lambda b: int(b["attention_mask"].sum()),
        )
        card = [f"`{model}` fine-tuned (mode **{mode}**) on `{train_file}`, loss on assistant tokens only."]
        return Plan(base, objective, model, report, card, merge_adapters=merge)

    return run_stage("sft", out, record, train, overwrite, build)
