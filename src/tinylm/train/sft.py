"""`tinylm sft`: supervised fine-tuning on conversations, with the loss on the assistant's tokens only.

The stage reads chat JSONL (`tinylm.data.chat`), renders it with the model's own chat template, batches
examples of similar length, and hands the shared loop a masked next-token loss. Which parameters learn is
the fine-tuning mode (`tinylm.train.finetune`: full, partial, frozen or LoRA). The run directory holds:

    config.yaml      the resolved config (rerunning the same command resumes; a different one is refused)
    metrics.jsonl    per-step loss, learning rate, tokens/s and peak memory, plus the evaluations
    checkpoints/     resumable training state
    model/           the fine-tuned checkpoint (for LoRA: the base with the adapters merged in, if merge)
    adapter/         LoRA only: the adapters alone, in Hugging Face PEFT's layout
    results.json     trainable parameters, data counts, held-out loss before and after, time, peak memory
    README.md        a model card
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..data.chat import IGNORE, Counts, Example, collate, encode_sft, length_batches, load_conversations
from ..errors import TinyLMError
from ..io import atomic_file, read_json, to_plain, write_json
from ..model import TinyLM, model_flops_per_token
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.lora import LoraConfig, apply_lora, merged_model, save_adapters
from ..tokenizer import Tokenizer
from .checkpointing import full_model_state
from .config import TrainConfig
from .distributed import barrier, shutdown
from .finetune import Mode, Trainable, prepare_finetune
from .loop import Task, seed_everything, start_run
from .loop import train as train_loop


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled (assistant) tokens of a right-padded batch.

    No attention mask is needed: with right padding, causal attention never lets a real token see a pad,
    and positions count from 0 as they do unpadded; the pads' own outputs carry no label.

    On a plain TinyLM the LM head runs only at labelled positions: for short answers after long prompts
    (a label after a review) the head and its softmax over the vocabulary were most of the memory and a
    large share of the time, spent on outputs that carry no loss. Wrapped models (DDP, FSDP2, compiled)
    run their whole forward, since their hooks live there; the loss is the same either way.
    """
    labels = batch["labels"]
    if type(model) is TinyLM:
        keep = labels != IGNORE
        logits = model.lm_head(model.hidden(batch["input_ids"])[keep])
        return F.cross_entropy(logits.float(), labels[keep], ignore_index=IGNORE)
    logits = model(batch["input_ids"])
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


class LengthBatches:
    """Micro-batch `index` of an endless sequence of epochs, each cut into batches of similar lengths.

    A pure function of (seed, index), as the loop requires for resume and DDP.
    """

    def __init__(self, examples: list[Example], batch_size: int, seed: int, pad_id: int) -> None:
        if not examples:
            raise TinyLMError("no training examples are left after fitting them to the context")
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.lengths = [len(e.input_ids) for e in examples]
        self.per_epoch = len(self._epoch(0))

    def _epoch(self, epoch: int) -> list[list[int]]:
        if getattr(self, "_cached", (None,))[0] != epoch:
            self._cached = (epoch, length_batches(self.lengths, self.batch_size, self.seed, epoch))
        return self._cached[1]

    def __call__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(index, self.per_epoch)
        return collate([self.examples[j] for j in self._epoch(epoch)[i]], self.pad_id)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated CUDA memory on a GPU, resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _data_files(data: str, test: str | None) -> tuple[Path, Path | None]:
    """The training file and the held-out file: DIR/train.jsonl and DIR/test.jsonl for a task directory."""
    path = Path(data)
    if path.is_dir():
        train_file = path / "train.jsonl"
        if not train_file.is_file():
            raise TinyLMError(f"{path} holds no train.jsonl (make one with `tinylm data make`)")
        held_out = Path(test) if test else (path / "test.jsonl" if (path / "test.jsonl").is_file() else None)
        return train_file, held_out
    return path, Path(test) if test else None


def _encode(
    path: Path, tok: Tokenizer, context: int, overflow: str, limit: int | None
) -> tuple[list, Counts]:
    conversations = load_conversations(path)
    return encode_sft(conversations[:limit], tok, context, overflow)


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
        model: Checkpoint directory to start from (ours, an imported one, or a Hugging Face Llama directory
            with tokenizer files).
        data: SFT JSONL ({"messages": [...]} or {"prompt", "completion"} rows), or a directory holding
            train.jsonl (and test.jsonl, used as the held-out set) as `tinylm data make` writes it.
        out: Run directory. Rerunning the same command there resumes from the last checkpoint.
        test: Held-out SFT JSONL for the evaluation loss (default: DATA/test.jsonl when DATA is a directory).
        mode: full, partial (last blocks + final norm + an untied head), frozen (embeddings and / or first blocks
            frozen) or lora.
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
    train = train or TrainConfig()
    lora = lora or LoraConfig()
    train_file, test_file = _data_files(data, test)
    base, tokenizer_dir = load_checkpoint(model)
    tok = Tokenizer.load(tokenizer_dir)
    context = context or base.config.max_seq_len
    if not 1 < context <= base.config.max_seq_len:
        raise TinyLMError(f"context must be in [2, {base.config.max_seq_len}] for this model, got {context}")
    examples, counts = _encode(train_file, tok, context, overflow, limit)
    held_out, test_counts = _encode(test_file, tok, context, overflow, limit) if test_file else ([], None)
    run_config = {
        "model": str(model),
        "data": str(train_file),
        "test": str(test_file) if test_file else None,
        "mode": mode,
        "lora": lora if mode == "lora" else None,
        "last_blocks": last_blocks if mode == "partial" else None,
        "freeze_embeddings": freeze_embeddings if mode == "frozen" else None,
        "freeze_blocks": freeze_blocks if mode == "frozen" else None,
        "context": context,
        "overflow": overflow,
        "limit": limit,
        "merge": merge,
        "train": train,
    }

    d, device, out_dir = start_run(out, run_config, train, overwrite)

    seed_everything(train.seed)
    trainable = prepare_finetune(base, mode, last_blocks, freeze_embeddings, freeze_blocks, lora)
    batches = LengthBatches(examples, train.batch_size, train.seed, tok.pad_id)
    if d.is_main:
        print(
            f"sft: mode {mode}, {trainable.trainable:,} of {trainable.total:,} parameters trainable "
            f"({trainable.share:.2%}); {counts.kept:,} examples ({counts.truncated:,} truncated, "
            f"{counts.dropped_too_long:,} dropped as longer than {context} tokens), "
            f"{batches.per_epoch:,} batches per epoch"
        )

    eval_batches = length_batches([len(e.input_ids) for e in held_out], train.batch_size, 0)
    eval_batches = eval_batches[: train.eval_batches]

    def evaluate(m: nn.Module) -> dict[str, float]:
        """Token-weighted loss over the first train.eval_batches length-batches of the held-out set."""
        total, n = 0.0, 0
        for idx in eval_batches:
            b = {k: v.to(device) for k, v in collate([held_out[i] for i in idx], tok.pad_id).items()}
            labelled = int((b["labels"] != IGNORE).sum())
            total += float(sft_loss(m, b)) * labelled
            n += labelled
        return {"val_loss": total / n}

    def loss(m: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(m, batch), {"peak_memory_mb": peak_memory_mb(device)}

    has_eval = bool(held_out) and train.eval_batches > 0
    before = None
    if has_eval:
        base.to(device).eval()
        with torch.no_grad():
            before = evaluate(base)["val_loss"]
        base.train()
    task = Task(
        batch=batches,
        loss=loss,
        evaluate=evaluate if has_eval else None,
        flops_per_token=model_flops_per_token(base.config, context) if mode == "full" else None,
        tokens=lambda b: int(b["attention_mask"].sum()),
    )
    loaded = peak_memory_mb(device)  # loading, tokenizing and the first evaluation: the floor under training
    result = train_loop(base, task, train, out_dir, run_config, desc="sft")
    peak = peak_memory_mb(device)  # before saving, which copies the weights
    final = TinyLM(base.config)
    if mode == "lora":
        apply_lora(final, lora)
    final.load_state_dict(full_model_state(base))  # gathers FSDP shards: every process takes part
    if result.interrupted or not d.is_main:
        barrier(d)
        shutdown(d)
        if result.interrupted:
            raise KeyboardInterrupt
        return {"step": result.step}

    final.eval()
    if mode == "lora":
        save_adapters(final, out_dir / "adapter")
    if mode != "lora" or merge:
        save_checkpoint(merged_model(final) if mode == "lora" else final, out_dir / "model", tokenizer_dir)
    results: dict[str, Any] = {
        "mode": mode,
        "trainable_params": trainable.trainable,
        "total_params": trainable.total,
        "lora_targets": trainable.lora_targets,
        "train_examples": to_plain(counts),
        "test_examples": to_plain(test_counts) if test_counts else None,
        "step": result.step,
        "epochs": result.step * train.grad_accum * d.world_size / batches.per_epoch,
        "train_seconds": result.elapsed,
        "peak_memory_mb": peak,
        "peak_memory_before_training_mb": loaded,
        "peak_memory_kind": "CUDA allocated" if device.type == "cuda" else "process resident set",
        "final_train_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])),
        "val_loss_before": before,
        "val_loss_after": result.eval_metrics.get("val_loss"),
    }
    write_json(out_dir / "results.json", results)
    _write_model_card(out_dir, run_config, results, trainable)
    print(
        f"sft: {result.step} steps in {result.elapsed:.0f} s, peak memory {peak:,.0f} MB"
        + (f", held-out loss {before:.4f} -> {results['val_loss_after']:.4f}" if has_eval else "")
    )
    barrier(d)
    shutdown(d)
    return results


def _write_model_card(
    out_dir: Path, run: dict[str, Any], results: dict[str, Any], trainable: Trainable
) -> None:
    c = results["train_examples"]
    lines = [
        f"# {out_dir.name}",
        "",
        f"`{run['model']}` fine-tuned with tinylm SFT on `{run['data']}` (loss on assistant tokens only).",
        "",
        "## Fine-tuning",
        "",
        f"- mode **{run['mode']}**: {trainable.trainable:,} of {trainable.total:,} parameters trained "
        f"({trainable.share:.2%})",
    ]
    if run["mode"] == "lora":
        lo = run["lora"]
        lines.append(
            f"- LoRA rank {lo.rank}, alpha {lo.alpha}, dropout {lo.dropout} on {len(trainable.lora_targets)} "
            "layers; adapters in `adapter/` (PEFT layout)"
            + ("; merged model in `model/`" if run["merge"] else "")
        )
    lines += [
        f"- data: {c['kept']:,} examples, {c['truncated']:,} truncated and {c['dropped_too_long']:,} dropped "
        f"at context {run['context']}",
        f"- {results['step']:,} steps ({results['epochs']:.2f} epochs) in {results['train_seconds']:.0f} s; "
        f"peak memory {results['peak_memory_mb']:,.0f} MB ({results['peak_memory_kind']}; "
        f"{results['peak_memory_before_training_mb']:,.0f} MB before training)",
        f"- final training loss {results['final_train_loss']:.4f} nats per assistant token",
    ]
    if results["val_loss_before"] is not None:
        lines.append(
            f"- held-out loss (`{run['test']}`): {results['val_loss_before']:.4f} before, "
            f"**{results['val_loss_after']:.4f} after**"
        )
    lines += ["- full config: `config.yaml`; per-step metrics: `metrics.jsonl`", "", "## Use", "", "```"]
    data_dir = Path(run["data"]).parent
    if (out_dir / "model").is_dir():
        lines.append(f"tinylm chat --model {out_dir / 'model'}")
        lines.append(f"tinylm eval task --model {out_dir / 'model'} --data {data_dir}")
    else:
        lines.append(
            f"tinylm eval task --model {run['model']} --adapter {out_dir / 'adapter'} --data {data_dir}"
        )
    lines += ["```", ""]
    with atomic_file(out_dir / "README.md") as f:
        f.write("\n".join(lines))


def summarize(out: str) -> str:
    """Markdown lines for a pipeline report: mode, trainable parameters and held-out loss of an SFT run."""
    r = read_json(Path(out) / "results.json")
    text = (
        f"mode {r['mode']}: {r['trainable_params']:,} of {r['total_params']:,} parameters trained, "
        f"{r['step']:,} steps in {r['train_seconds']:.0f} s, peak memory {r['peak_memory_mb']:,.0f} MB"
    )
    if r["val_loss_before"] is not None:
        text += f"; held-out loss {r['val_loss_before']:.4f} -> {r['val_loss_after']:.4f}"
    return text
