"""The `tinylm scaling fit` and `predict` verbs (`scaling sweep` is `sweep.run_sweep` itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..io import write_json
from .fit import Law, fit_rows
from .plot import plot_isoflop, plot_law
from .predict import load_law, predict
from .sweep import read_rows


def scaling_fit(
    sweep: str,
    out: str | None = None,
    params: Literal["non_embedding", "total"] = "non_embedding",
    holdout_largest: bool = False,
) -> dict[str, Any]:
    """Fit L(N, D) = E + A/N^α + B/D^β (Chinchilla approach 3) and the IsoFLOP parabolas (approach 2) to a sweep.

    Args:
        sweep: Sweep directory (or its runs.jsonl).
        out: Directory for fit.json, law.png and isoflop.png; default: the sweep directory.
        params: N counts the non-embedding parameters (Kaplan et al.) or all of them (Hoffmann et al.).
        holdout_largest: Also fit without the run of most compute and report how well that fit predicts it.
    """
    rows = read_rows(sweep)
    n_key = "n_params_non_embedding" if params == "non_embedding" else "n_params"
    report, profiles = fit_rows(rows, n_key, holdout_largest)
    out_dir = Path(out) if out else (Path(sweep) if Path(sweep).is_dir() else Path(sweep).parent)
    write_json(out_dir / "fit.json", {"sweep": str(sweep), **report})
    plot_law(rows, Law(**report["law"]), n_key, out_dir / "law.png")
    if profiles:
        plot_isoflop(rows, profiles, n_key, out_dir / "isoflop.png")
    law = report["law"]
    print(
        f"scaling fit: L = {law['E']:.4g} + {law['A']:.4g}/N^{law['alpha']:.4f} + {law['B']:.4g}/D^{law['beta']:.4f} "
        f"over {len(rows)} runs ({params} parameters)"
    )
    for c in report["compute_optimal"]:
        print(f"  C = {c['flops']:.3g}: compute-optimal N = {c['params']:.3g}, D = {c['tokens']:.3g} "
              f"({c['tokens_per_param']:.1f} tokens per parameter), loss {c['loss']:.4f}")  # fmt: skip
    iso = report["isoflop"]
    if "n_opt_exponent" in iso:
        print(f"  IsoFLOP: N_opt ∝ C^{iso['n_opt_exponent']:.3f}, D_opt ∝ C^{iso['d_opt_exponent']:.3f}")
    if "holdout" in report:
        h = report["holdout"]
        print(
            f"  held out {h['name']}: predicted {h['predicted']:.4f}, actual {h['actual']:.4f} ({h['error_pct']:+.2f} %)"
        )
    print(f"scaling fit: wrote {out_dir / 'fit.json'}")
    return report


def scaling_predict(
    fit: str, params: float | None = None, tokens: float | None = None, flops: float | None = None
) -> dict[str, Any]:
    """Predict a run's loss from a fitted law, or the compute-optimal size and data for a FLOP budget.

    Args:
        fit: fit.json from `tinylm scaling fit` (or the directory holding it).
        params: Parameters N (counted as the fit counted them).
        tokens: Training tokens D.
        flops: Compute C = 6·N·D; alone it asks for the compute-optimal N and D.
    """
    answer = predict(load_law(fit), params, tokens, flops)
    line = f"N = {answer['params']:.4g}, D = {answer['tokens']:.4g}, C = {answer['flops']:.4g}: loss {answer['loss']:.4f}"
    if answer.get("compute_optimal"):
        line = (
            f"compute-optimal for C = {answer['flops']:.4g}: N = {answer['params']:.4g}, D = {answer['tokens']:.4g} "
            f"({answer['tokens_per_param']:.1f} tokens per parameter), loss {answer['loss']:.4f}"
        )
    print(f"scaling predict: {line}")
    return answer
