"""A scaling sweep: a grid of model sizes × budgets, each a normal `pretrain` run under one sweep directory.

    <out>/config.yaml       what every run shares: shards, tokenizer, context, shared model fields, training
    <out>/runs/<name>/      a `tinylm pretrain` run directory, plus scaling.json (its row) once finished
    <out>/runs.jsonl, .csv  one row per finished run

A budget is a FLOP count (IsoFLOP: each size trains for C / flops-per-token tokens, tinylm's own count of
the FLOPs per token, attention and LM head included) or a number of optimizer steps. Rerunning a sweep
skips the finished runs and resumes an interrupted one from its checkpoint; the grid may grow between
reruns, but what the runs share may not change, so every row of a sweep is comparable.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..data.jsonl import jsonl_rows
from ..data.shards import TokenShards
from ..errors import TinyLMError
from ..io import atomic_file, check_out_dir, read_json, to_plain, write_json, write_yaml
from ..models import PRESETS, ModelConfig, model_flops_per_token, param_counts
from ..tokenizer import Tokenizer
from ..train.config import TrainConfig
from ..train.stages.pretrain import pretrain

Size = str | dict[str, Any]
""""D_MODELxN_LAYER" ("128x4"), a preset name ("1m"), or a dict of `ModelConfig` fields (with an optional
"name")."""


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: a model shape trained for a number of steps."""

    name: str
    model: ModelConfig
    steps: int
    tokens: int
    flops_per_token: int
    budget_flops: float | None
    """The IsoFLOP budget this run belongs to (None when budgets are steps)."""

    @property
    def flops(self) -> float:
        return float(self.tokens * self.flops_per_token)


def model_of(size: Size, common: dict[str, Any], head_dim: int, vocab_size: int, context: int):
    """(name, ModelConfig) of one size of the grid; `common` fields apply to every size."""
    base = {"max_seq_len": context, **common, "vocab_size": vocab_size}
    if isinstance(size, dict):
        fields = dict(size)
        name = str(fields.pop("name", "")) or f"d{fields.get('d_model')}-l{fields.get('n_layer')}"
        return name, ModelConfig(**{**base, **fields})
    if size in PRESETS:
        return size, ModelConfig(preset=size, **base)
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise TinyLMError(
            f"size {size!r}: expected D_MODELxN_LAYER (e.g. 128x4), a preset ({', '.join(PRESETS)}) "
            "or a dict of model fields"
        )
    d_model, n_layer = map(int, parts)
    if d_model % head_dim:
        raise TinyLMError(f"size {size!r}: d_model {d_model} is not a multiple of head_dim {head_dim}")
    config = ModelConfig(**{**base, "d_model": d_model, "n_layer": n_layer, "n_head": d_model // head_dim})
    return f"d{d_model}-l{n_layer}", config


def plan_runs(
    sizes: list[Size],
    flops: list[float] | None,
    steps: list[int] | None,
    common: dict[str, Any],
    head_dim: int,
    vocab_size: int,
    context: int,
    train: TrainConfig,
) -> list[PlannedRun]:
    """Every (budget, size) run of the grid, smallest budget first; a cell that cannot run is a TinyLMError."""
    if not sizes:
        raise TinyLMError("sizes: give at least one model size")
    if (flops is None) == (steps is None):
        raise TinyLMError("give the budgets as either --flops (IsoFLOP) or --steps, not both or neither")
    budgets = flops if flops is not None else steps
    option = "flops" if flops is not None else "steps"
    if not budgets or any(not b > 0 for b in budgets) or len(set(budgets)) < len(budgets):
        raise TinyLMError(f"{option}: expected distinct positive budgets, got {budgets}")
    models = dict(model_of(s, common, head_dim, vocab_size, context) for s in sizes)
    if len(models) < len(sizes):
        raise TinyLMError(f"sizes: two sizes share a name; give dict sizes a distinct 'name' ({sizes})")
    tokens_per_step = train.batch_size * train.grad_accum * context
    runs = []
    for budget in sorted(budgets):
        for name, model in models.items():
            fpt = model_flops_per_token(model, context)
            n_steps = round(budget / (fpt * tokens_per_step)) if flops is not None else int(budget)
            if n_steps < 1:
                raise TinyLMError(
                    f"flops: budget {budget:.3g} is less than one step of size {name} "
                    f"({fpt * tokens_per_step:.3g} FLOPs); raise it or shrink train.batch_size"
                )
            if n_steps <= train.warmup_steps:
                raise TinyLMError(
                    f"train.warmup_steps={train.warmup_steps} is not below the {n_steps} steps of size {name} "
                    f"at budget {budget:g}; lower it so every run finishes its warmup"
                )
            label = f"C{budget:.3g}".replace("+", "") if flops is not None else f"s{n_steps}"
            runs.append(
                PlannedRun(
                    f"{name}_{label}",
                    model,
                    n_steps,
                    n_steps * tokens_per_step,
                    fpt,
                    float(budget) if flops is not None else None,
                )
            )
    return runs


def run_sweep(
    shards: str,
    out: str,
    sizes: list[Size],
    flops: list[float] | None = None,
    steps: list[int] | None = None,
    tokenizer: str | None = None,
    common: dict[str, Any] | None = None,
    head_dim: int = 64,
    context: int = 256,
    train: TrainConfig | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Pretrain a grid of model sizes × budgets (IsoFLOP or steps), one row of loss, size and compute per run.

    Trains every planned run not yet finished and returns the rows of every finished run of the sweep.

    Args:
        shards: Token shards directory every run trains and is validated on.
        out: Sweep directory (runs/<name>/ are pretrain runs; runs.jsonl and runs.csv the rows). Rerunning
            skips finished runs and resumes an interrupted one; the grid may grow, the shared settings not.
        sizes: Model sizes: D_MODELxN_LAYER ("128x4", n_head = d_model / head_dim), a preset name, or (in
            YAML) a dict of model fields with an optional "name".
        flops: IsoFLOP budgets: each size trains for budget / (FLOPs per token) tokens.
        steps: Or budgets in optimizer steps, the same for every size.
        tokenizer: Tokenizer directory; default: the one the shards were prepared with.
        common: Model fields shared by every size (e.g. {mlp: gelu}).
        head_dim: Width of an attention head for D_MODELxN_LAYER sizes.
        context: Training window length in tokens (every size's max_seq_len unless common sets it).
        train: Training settings shared by every run; max_steps comes from each run's budget.
        overwrite: Replace a sweep directory that holds a different sweep.
    """
    train, out_dir = train or TrainConfig(), Path(out)
    data = TokenShards.open(shards)
    tokenizer_dir = Path(tokenizer) if tokenizer else data.tokenizer_dir()
    tok = Tokenizer.load(tokenizer_dir)
    data.check_tokenizer(tok)
    if len(data.split("val")) <= context:
        raise TinyLMError(f"{shards}: the validation split has fewer than context={context} tokens to score")
    runs = plan_runs(sizes, flops, steps, common or {}, head_dim, tok.vocab_size, context, train)
    shared = {  # the tokenizer first: a sweep on another one is refused by that name
        "tokenizer_hash": tok.hash,
        "shards": str(Path(shards).resolve()),
        "tokenizer": str(tokenizer_dir.resolve()),
        "context": context,
        "head_dim": head_dim,
        "common": common or {},
        "train": {k: v for k, v in to_plain(train).items() if k != "max_steps"},
    }
    check_out_dir(out_dir, shared, overwrite)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    write_yaml(out_dir / "config.yaml", shared)
    _print_plan(runs, out_dir)
    rate = _measured_rate(collect_rows(out_dir))
    for i, run in enumerate(runs, 1):
        run_dir = out_dir / "runs" / run.name
        if (run_dir / "scaling.json").is_file():
            continue
        left = sum(
            r.flops for r in runs[i - 1 :] if not (out_dir / "runs" / r.name / "scaling.json").is_file()
        )
        eta = f"; about {_duration(left / rate)} left at {rate:.3g} FLOP/s measured" if rate else ""
        print(f"scaling sweep: run {i}/{len(runs)} {run.name}: {run.steps} steps, {run.flops:.3g} FLOPs{eta}")
        results = pretrain(
            shared["shards"],
            str(run_dir),
            tokenizer=shared["tokenizer"],
            model=run.model,
            train=replace(train, max_steps=run.steps),
            context=context,
            sample_tokens=0,
        )
        row = _row(run, results, shared)
        write_json(run_dir / "scaling.json", row)
        rate = rate or _measured_rate([row])
        write_rows(out_dir, collect_rows(out_dir))
    rows = collect_rows(out_dir)
    write_rows(out_dir, rows)
    return rows


def _row(run: PlannedRun, results: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """The sweep's record of one finished run."""
    counts, c = param_counts(run.model), run.model
    return {
        "name": run.name,
        "family": c.family,
        "d_model": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "d_ff": c.d_ff,
        "n_params": counts.total,
        "n_params_non_embedding": counts.blocks,
        "steps": results["step"],
        "tokens": results["tokens_seen"],
        "flops_per_token": run.flops_per_token,
        "flops": float(results["tokens_seen"] * run.flops_per_token),
        "budget_flops": run.budget_flops,
        "val_loss": results["val_nll_per_token"],
        "val_bpb": results["val_bpb"],
        "train_seconds": results["train_seconds"],
        "tokens_per_second": results["tokens_seen"] / max(results["train_seconds"], 1e-9),
        "tokenizer_hash": shared["tokenizer_hash"],
        "shards": shared["shards"],
    }


def collect_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of every finished run under `out/runs`, checked to share one tokenizer and one data set."""
    rows = [read_json(p) for p in (out / "runs").glob("*/scaling.json")]
    rows.sort(key=lambda r: (r["budget_flops"] or r["flops"], r["n_params"], r["name"]))
    check_comparable(rows, str(out))
    return rows


def check_comparable(rows: list[dict[str, Any]], source: str) -> None:
    """A TinyLMError unless every row was trained with the same tokenizer on the same shards."""
    for key, what in (("tokenizer_hash", "tokenizers"), ("shards", "data")):
        seen = {r[key]: r["name"] for r in rows}
        if len(seen) > 1:
            (a, run_a), (b, run_b) = list(seen.items())[:2]
            raise TinyLMError(
                f"{source}: runs {run_a} and {run_b} were trained on different {what} "
                f"({key} {str(a)[:16]} vs {str(b)[:16]}); a sweep compares runs on one tokenizer and one data set"
            )


def write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    """runs.jsonl and runs.csv: the same rows, for programs and for spreadsheets."""
    with atomic_file(out / "runs.jsonl") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_file(out / "runs.csv") as f:
        f.write(text.getvalue())


def _measured_rate(rows: list[dict[str, Any]]) -> float | None:
    """FLOP/s of the first finished run, to estimate how long the rest will take."""
    return rows[0]["flops"] / max(rows[0]["train_seconds"], 1e-9) if rows else None


def _print_plan(runs: list[PlannedRun], out: Path) -> None:
    done = sum((out / "runs" / r.name / "scaling.json").is_file() for r in runs)
    total = sum(r.flops for r in runs)
    print(f"scaling sweep: {len(runs)} runs ({done} already finished), {total:.3g} FLOPs planned in all")
    print(f"  {'run':<24} {'non-emb params':>14} {'tokens':>12} {'steps':>7} {'FLOPs':>10}")
    for r in runs:
        n = param_counts(r.model).blocks
        print(f"  {r.name:<24} {n:>14,} {r.tokens:>12,} {r.steps:>7} {r.flops:>10.3g}")


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{s:02d}s"


def read_rows(source: str | Path) -> list[dict[str, Any]]:
    """The rows of a sweep directory (its runs.jsonl) or of a runs.jsonl file, checked to be comparable."""
    path = Path(source)
    path = path / "runs.jsonl" if path.is_dir() else path
    fields = ("name", "n_params", "n_params_non_embedding", "tokens", "flops", "budget_flops", "val_loss")
    rows = [
        row for _, row in jsonl_rows(path, fields, hint="expected the rows `tinylm scaling sweep` writes")
    ]
    check_comparable(rows, str(path))
    return rows
