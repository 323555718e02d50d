"""Fitting scaling laws to a sweep's final losses, the two ways of Hoffmann et al. 2022 (Chinchilla).

Approach 3, the parametric law

    L(N, D) = E + A / N^α + B / D^β

fitted in log space: parameters (a, b, e, α, β) with A = e^a, B = e^b, E = e^e, so that
log L̂ = logsumexp(a − α log N, b − β log D, e), minimising the Huber loss (δ = 1e-3) of log L̂ − log L
with L-BFGS from every start of their grid, keeping the best. Huber on log-loss makes the fit robust to
a few bad runs, and the grid guards against L-BFGS stopping in a poor local minimum.

Approach 2, IsoFLOP profiles: the runs of one FLOP budget C trace loss against size; a parabola in log N
puts the minimum at N_opt(C) (and in log D at D_opt(C)); power laws N_opt ∝ C^a, D_opt ∝ C^b through
those minima give how size and data should grow with compute.

Compute here is C = 6·N·D (the law's own accounting: forward + backward of N weights for D tokens).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ..errors import TinyLMError

HUBER_DELTA = 1e-3
GRID = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
}
"""Hoffmann et al.'s grid of L-BFGS starts: 5 × 5 × 5 × 6 × 6 = 4500 points."""


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising L under 6·N·D = flops (closed form, Hoffmann et al. eq. 4)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * (flops / 6) ** (b / (a + b)), (flops / 6) ** (a / (a + b)) / g

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class LawFit:
    """The best fit of approach 3 and what it cost."""

    law: Law
    objective: float
    """Summed Huber loss of the log residuals at the optimum."""
    starts: int
    polished: int
    """End points refined with scipy's L-BFGS-B."""


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    """Summed Huber loss of log L̂ − log L and its gradient in (a, b, e, alpha, beta), for one parameter
    vector (5,) or a batch of them (S, 5) at once."""
    theta = np.asarray(theta, dtype=float)
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e + 0 * log_n), axis=-2)
    top = terms.max(axis=-2, keepdims=True)
    exp = np.exp(terms - top)
    total = exp.sum(axis=-2, keepdims=True)
    log_pred = (top + np.log(total))[..., 0, :]  # logsumexp of the three terms
    w = exp / total  # each term's share of L̂: d log L̂ / d term
    r = log_pred - log_l
    m = np.minimum(np.abs(r), delta)
    value = (0.5 * m**2 + delta * (np.abs(r) - m)).sum(axis=-1)  # Huber: quadratic within delta, then linear
    dr = np.sign(r) * m
    grad = np.stack(
        [
            (dr * w[..., 0, :]).sum(-1),
            (dr * w[..., 1, :]).sum(-1),
            (dr * w[..., 2, :]).sum(-1),
            -(dr * w[..., 0, :] * log_n).sum(-1),
            -(dr * w[..., 1, :] * log_d).sum(-1),
        ],
        axis=-1,
    )
    return value, grad


def batched_lbfgs(f, x0: np.ndarray, iters: int = 200, memory: int = 10, ftol: float = 1e-12) -> np.ndarray:
    """L-BFGS run from every row of `x0` at once (independent runs, vectorised): the two-loop recursion with
    per-run memory and a backtracking (Armijo) line search, each run's first trial step twice its last
    accepted one. A run stops when its relative decrease falls below `ftol` or no step decreases it.
    `f(x) -> (values, gradients)` on a batch of rows."""
    x = x0.astype(float).copy()
    fx, g = f(x)
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, 1 / s·y) per run, newest last
    active, step = np.isfinite(fx), np.ones(len(x))
    for _ in range(iters):
        if not active.any():
            break
        q, coeffs = g.copy(), []
        for s, y, rho in reversed(pairs):
            c = rho * (s * q).sum(1)
            q -= c[:, None] * y
            coeffs.append(c)
        if pairs:
            s, y, _ = pairs[-1]
            yy = (y * y).sum(1)
            gamma = np.where(yy > 0, (s * y).sum(1) / np.where(yy > 0, yy, 1.0), 1.0)
        else:
            gamma = 1.0 / np.maximum(1.0, np.abs(g).max(axis=1))
        r = gamma[:, None] * q
        for (s, y, rho), c in zip(pairs, reversed(coeffs), strict=True):
            r += s * (c - rho * (y * r).sum(1))[:, None]
        d, slope = -r, -(g * r).sum(1)
        bad = ~(slope < 0)  # not a descent direction: steepest descent for that run
        d[bad], slope[bad] = -g[bad], -(g[bad] ** 2).sum(1)
        t = np.minimum(1.0, 2 * step)
        x_new, f_new, g_new = x.copy(), fx.copy(), g.copy()
        todo = active.copy()
        for _ in range(30):
            idx = np.flatnonzero(todo)
            if not len(idx):
                break
            trial = x[idx] + t[idx, None] * d[idx]
            f_t, g_t = f(trial)
            ok = np.isfinite(f_t) & (f_t <= fx[idx] + 1e-4 * t[idx] * slope[idx])
            x_new[idx[ok]], f_new[idx[ok]], g_new[idx[ok]] = trial[ok], f_t[ok], g_t[ok]
            todo[idx[ok]] = False
            t[idx[~ok]] *= 0.25
        moved = active & ~todo
        step = np.where(moved, t, step)
        active = moved & (fx - f_new > ftol * np.abs(fx))
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(1)
        curved = moved & (sy > 1e-10 * np.sqrt((s * s).sum(1) * (y * y).sum(1)))  # else the pair is skipped
        rho = np.where(curved, 1.0 / np.where(curved, sy, 1.0), 0.0)
        pairs = [*pairs[-(memory - 1) :], (s, y, rho)]
        x, fx, g = x_new, f_new, g_new
    return x


def fit_law(
    n: Sequence[float],
    d: Sequence[float],
    loss: Sequence[float],
    delta: float = HUBER_DELTA,
    polish: int = 10,
) -> LawFit:
    """Approach 3: the law through points (N, D, L).

    L-BFGS runs from every start of `GRID` (vectorised, so 4500 starts take about a second); the `polish`
    best end points are refined with scipy's L-BFGS-B at tight tolerances, and the best of those is kept.
    """
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    if len(loss) < 5:
        raise TinyLMError(f"fitting L(N, D) needs at least 5 runs (5 parameters), got {len(loss)}")
    if (n <= 0).any() or (d <= 0).any() or (loss <= 0).any() or not np.isfinite(loss).all():
        raise TinyLMError(
            "every run needs positive parameters, tokens and a finite positive loss to be fitted"
        )
    args = (np.log(n), np.log(d), np.log(loss), delta)
    g = GRID
    starts = np.array(
        [
            [a, b, e, alpha, beta]
            for alpha, beta, e, a, b in itertools.product(*(g[k] for k in ("alpha", "beta", "e", "a", "b")))
        ]
    )
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # far-off starts overflow; their runs fall back or stop
        ends = batched_lbfgs(lambda x: _objective(x, *args), starts)
    values, _ = _objective(ends, *args)
    best = None
    for x in ends[np.argsort(np.where(np.isfinite(values), values, np.inf))[:polish]]:
        result = minimize(
            _objective, x, args=args, jac=True, method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
        )  # fmt: skip
        if best is None or result.fun < best.fun:
            best = result
    a, b, e, alpha, beta = best.x
    law = Law(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta))
    return LawFit(law, float(best.fun), len(starts), polish)


@dataclass(frozen=True)
class IsoFlop:
    """One FLOP budget's profile: the parabola of loss in log N (and in log D) and where it bottoms out."""

    budget: float
    n_opt: float
    d_opt: float
    loss_opt: float
    coefficients: tuple[float, float, float]
    """Loss = c0·x² + c1·x + c2 with x = ln N."""
    interior: bool
    """N_opt lies within the sizes the budget trained; outside, it is an extrapolation of the parabola."""


def parabola_minimum(
    x: Sequence[float], y: Sequence[float]
) -> tuple[float, float, tuple[float, float, float]]:
    """(x at the minimum, y there, coefficients) of the least-squares parabola through (x, y)."""
    c = np.polyfit(np.asarray(x, float), np.asarray(y, float), 2)
    if c[0] <= 0:
        raise TinyLMError(
            "the points bend down (a parabola with no minimum); the budget needs sizes on both sides of its optimum"
        )
    x_min = -c[1] / (2 * c[0])
    return float(x_min), float(np.polyval(c, x_min)), (float(c[0]), float(c[1]), float(c[2]))


def isoflop_profile(budget: float, n: Sequence[float], d: Sequence[float], loss: Sequence[float]) -> IsoFlop:
    """Approach 2 for one budget: the parabola minima of loss in ln N and in ln D."""
    if len(loss) < 3:
        raise TinyLMError(f"budget {budget:.3g}: an IsoFLOP parabola needs at least 3 sizes, got {len(loss)}")
    x_n, loss_opt, coefficients = parabola_minimum(np.log(n), loss)
    x_d, _, _ = parabola_minimum(np.log(d), loss)
    interior = bool(min(n) <= math.exp(x_n) <= max(n))
    return IsoFlop(float(budget), math.exp(x_n), math.exp(x_d), loss_opt, coefficients, interior)


def power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(exponent k, coefficient c) of y = c·x^k fitted in log-log space."""
    k, log_c = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(k), float(math.exp(log_c))


def fit_rows(
    rows: list[dict[str, Any]], n_key: str, holdout_largest: bool = False
) -> tuple[dict[str, Any], list[IsoFlop]]:
    """Both approaches on a sweep's rows: fit.json's contents (the law with its residuals, the IsoFLOP
    profiles and exponents, the compute-optimal run at each budget and, with `holdout_largest`, how well a
    fit without the run of most compute predicts it) and the IsoFLOP profiles."""
    n, d, loss = (np.array([r[k] for r in rows], float) for k in (n_key, "tokens", "val_loss"))
    fitted = fit_law(n, d, loss)
    law = fitted.law
    predicted = law.loss(n, d)
    report: dict[str, Any] = {
        "params": n_key,
        "runs": len(rows),
        "law": law.to_dict(),
        "objective": fitted.objective,
        "starts": fitted.starts,
        "residuals": [
            {
                "name": r["name"],
                "params": r[n_key],
                "tokens": r["tokens"],
                "loss": r["val_loss"],
                "predicted": float(p),
                "error_pct": float(100 * (p / r["val_loss"] - 1)),
            }
            for r, p in zip(rows, predicted, strict=True)
        ],  # fmt: skip
    }
    budgets = sorted({r["budget_flops"] for r in rows if r["budget_flops"] is not None}) or [
        max(r["flops"] for r in rows)
    ]
    report["compute_optimal"] = []
    for c in budgets:
        n_opt, d_opt = law.compute_optimal(c)
        report["compute_optimal"].append(
            {"flops": c, "params": n_opt, "tokens": d_opt, "tokens_per_param": d_opt / n_opt,
             "loss": float(law.loss(n_opt, d_opt))}
        )  # fmt: skip
    profiles, skipped = [], []
    for c in sorted({r["budget_flops"] for r in rows if r["budget_flops"] is not None}):
        runs = [r for r in rows if r["budget_flops"] == c]
        try:
            profiles.append(
                isoflop_profile(
                    c, [r[n_key] for r in runs], [r["tokens"] for r in runs], [r["val_loss"] for r in runs]
                )
            )
        except TinyLMError as e:
            skipped.append({"flops": c, "reason": str(e)})
    report["isoflop"] = {"profiles": [asdict(p) for p in profiles], "skipped": skipped}
    if len(profiles) >= 2:
        budgets_fitted = [p.budget for p in profiles]
        report["isoflop"]["n_opt_exponent"] = power_law(budgets_fitted, [p.n_opt for p in profiles])[0]
        report["isoflop"]["d_opt_exponent"] = power_law(budgets_fitted, [p.d_opt for p in profiles])[0]
    if holdout_largest:
        largest = max(range(len(rows)), key=lambda i: rows[i]["flops"])
        keep = np.arange(len(rows)) != largest
        held = fit_law(n[keep], d[keep], loss[keep]).law
        guess = float(held.loss(n[largest], d[largest]))
        report["holdout"] = {
            "name": rows[largest]["name"],
            "law": held.to_dict(),
            "predicted": guess,
            "actual": float(loss[largest]),
            "error_pct": 100 * (guess / float(loss[largest]) - 1),
        }
    return report, profiles
