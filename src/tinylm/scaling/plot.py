"""The two pictures of a scaling fit: loss against compute with the law's curve for each size, and the
IsoFLOP parabolas with their minima."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_file
from .fit import IsoFlop, Law


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_law(rows: list[dict[str, Any]], law: Law, n_key: str, path: Path) -> None:
    """Final validation loss against training FLOPs, one colour per size, with L(N, D) along each size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_size[r[n_key]].append(r)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(by_size)))
    for colour, (n, runs) in zip(colours, sorted(by_size.items()), strict=True):
        fpt = runs[0]["flops"] / runs[0]["tokens"]
        d = np.geomspace(min(r["tokens"] for r in runs) / 3, max(r["tokens"] for r in runs) * 3, 100)
        ax.plot(d * fpt, law.loss(n, d), color=colour, lw=1)
        ax.scatter([r["flops"] for r in runs], [r["val_loss"] for r in runs], color=colour, s=18,
                   label=f"N = {n:,}")  # fmt: skip
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="validation loss (nats / token)",
           title=f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}")  # fmt: skip
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    _save(fig, plt, path)


def plot_isoflop(rows: list[dict[str, Any]], profiles: list[IsoFlop], n_key: str, path: Path) -> None:
    """Loss against size for each FLOP budget, its fitted parabola in ln N, and the minimum marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(profiles))))
    for colour, p in zip(colours, profiles, strict=True):
        runs = [r for r in rows if r["budget_flops"] == p.budget]
        n = np.array([r[n_key] for r in runs], float)
        ax.scatter(n, [r["val_loss"] for r in runs], color=colour, s=18)
        x = np.linspace(np.log(n.min()) - 0.2, np.log(n.max()) + 0.2, 100)
        ax.plot(np.exp(x), np.polyval(p.coefficients, x), color=colour, lw=1, label=f"C = {p.budget:.3g}")
        ax.scatter([p.n_opt], [p.loss_opt], color=colour, marker="*", s=120, edgecolor="black", zorder=3)
    ax.set(xscale="log", xlabel="parameters N", ylabel="validation loss (nats / token)",
           title="IsoFLOP profiles (stars: the minimum of each parabola)")  # fmt: skip
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
