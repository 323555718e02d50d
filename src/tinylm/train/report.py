"""What every training stage writes about itself: the loss curve, parameter and memory counts, a model card."""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_file


def describe(model: nn.Module) -> str:
    """The shape of a model's body, in a phrase ("llama, 4 layers, d_model 128, 0.79M non-embedding ...")."""
    from ..models import Backbone

    body = model if isinstance(model, Backbone) else model.body
    c = body.config
    size = body.num_params(non_embedding=True) / 1e6
    return f"{c.family}, {c.n_layer} layers, d_model {c.d_model}, {size:.2f}M non-embedding parameters"


def trainable_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters, each distinct tensor once (a tied head is the embedding)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
    }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated CUDA memory on a GPU, resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def plot_losses(metrics_path: Path, png_path: Path, title: str) -> None:
    """Training loss per step and validation loss at each evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    train_pts = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    val_pts = [(r["step"], r["eval/val_loss"]) for r in records if "eval/val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), lw=0.8, alpha=0.8, label="train")
    if val_pts:
        ax.plot(*zip(*val_pts, strict=True), "o-", label="validation")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(png_path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


LABELS = {
    "val_bpb": "validation bits per byte (whole split)",
    "val_nll_per_token": "validation loss per token (nats)",
    "val_mlm_accuracy": "validation masked-token accuracy (whole split, fixed masks)",
    "val_mlm_loss": "validation masked-token loss (nats)",
    "val_loss_before": "held-out loss before",
    "val_loss_after": "held-out loss after",
    "final_train_loss": "training loss (mean of the last 20 steps)",
}
"""How the model card names a result, where its key alone would not say."""


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_model_card(out: Path, stage: str, lines: list[str], results: dict[str, Any], shape: str) -> None:
    """README.md: what the stage trained on, how long, what it scored, and how to use the model."""
    share = results["trainable_params"] / max(1, results["total_params"])
    scalars = {k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    card = [
        f"# {out.name}",
        "",
        f"A model trained by `tinylm {stage}`.",
        "",
        *lines,
        "",
        "## Training",
        "",
        f"- model: {shape}",
        f"- {results['trainable_params']:,} of {results['total_params']:,} parameters trained ({share:.2%})",
        f"- {results['step']:,} steps in {results['train_seconds']:.0f} s, "
        f"{results['skipped_steps']} skipped as non-finite; peak memory {results['peak_memory_mb']:,.0f} MB "
        f"({results['peak_memory_kind']})",
        "- full config: `config.yaml`; per-step metrics: `metrics.jsonl`",
        "",
        "![loss](loss.png)",
        "",
        "## Results",
        "",
        "| result | value |",
        "|---|---|",
        *(f"| {LABELS.get(k, k)} | {_value(v)} |" for k, v in scalars.items()),
        "",
    ]
    if results.get("sample"):
        card += ["## Sample", "", "```", results["sample"], "```", ""]
    model_dir = out / "model"
    if model_dir.is_dir():
        use = (
            f"tinylm embed --model {model_dir} --text 'Hello'"
            if results.get("objective") == "mlm"
            else f"tinylm generate --model {model_dir} --prompt 'Hello'"
        )
        card += ["## Use", "", "```", use, "```", ""]
    with atomic_file(out / "README.md") as f:
        f.write("\n".join(card))


def summarize_run(out: str | Path) -> str:
    """Markdown on a training stage's run directory for the pipeline's report: budget, what it scored, the
    loss curve, and a sample if it wrote one."""
    from ..io import read_json

    out = Path(out)
    r = read_json(out / "results.json")
    parts = [f"{r['step']:,} steps in {r['train_seconds']:.0f} s"]
    if "mode" in r:
        parts.insert(
            0, f"mode {r['mode']}: {r['trainable_params']:,} of {r['total_params']:,} parameters trained"
        )
    if r.get("tokens_seen"):
        parts[-1] = (
            f"{r['step']:,} steps, {r['tokens_seen']:,} tokens in {r['train_seconds']:.0f} s of training"
        )
    if r.get("val_bpb") is not None:
        parts.append(f"validation **{r['val_bpb']:.4f} bits per byte**")
    if r.get("val_mlm_accuracy") is not None:
        parts.append(f"validation **masked-token accuracy {r['val_mlm_accuracy']:.4f}**")
    if r.get("val_loss_before") is not None:
        parts.append(f"held-out loss {r['val_loss_before']:.4f} -> {r['val_loss_after']:.4f}")
    if r.get("val_agreement_after") is not None:
        parts.append(
            f"held-out KL to the teacher {r['val_kl_before']:.4f} -> {r['val_kl_after']:.4f}, agreement "
            f"{r['val_agreement_before']:.1%} -> **{r['val_agreement_after']:.1%}**"
        )
    for prefix, label in (
        ("heldout_", "held-out"),
        ("start_heldout_", "the starting model, same prompts and seed:"),
    ):
        scores = {
            k.removeprefix(prefix): v for k, v in r.items() if k.startswith(prefix) and isinstance(v, float)
        }
        if scores:
            parts.append(f"{label} " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    lines = ["; ".join(parts), "", f"![{r.get('stage', out.name)} loss]({out.name}/loss.png)"]
    if r.get("sample"):
        lines += ["", "```", r["sample"].rstrip(), "```"]
    return "\n".join(lines) + "\n"
