"""What a fitted law says about runs not yet made: the loss of a given size and data, or the compute-optimal
size and data for a FLOP budget (C = 6·N·D, N counted as the fit counted it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TinyLMError
from ..io import read_json
from .fit import Law


def load_law(path: str | Path) -> Law:
    """The law in a fit.json written by `tinylm scaling fit` (or the fit.json inside a sweep directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    if not path.is_file():
        raise TinyLMError(f"{path}: no such file; write it with `tinylm scaling fit`")
    law = read_json(path).get("law")
    if not isinstance(law, dict) or set(law) != set(Law.__dataclass_fields__):
        raise TinyLMError(
            f"{path}: no fitted law (expected a 'law' with {', '.join(Law.__dataclass_fields__)})"
        )
    return Law(**law)


def predict(
    law: Law, params: float | None = None, tokens: float | None = None, flops: float | None = None
) -> dict[str, Any]:
    """The law's answer for (params, tokens), (params, flops) or flops alone (then the compute-optimal run)."""
    for name, value in (("params", params), ("tokens", tokens), ("flops", flops)):
        if value is not None and not value > 0:
            raise TinyLMError(f"{name} must be positive, got {value}")
    if params is not None and tokens is not None and flops is None:
        return {
            "params": params,
            "tokens": tokens,
            "flops": 6 * params * tokens,
            "loss": float(law.loss(params, tokens)),
        }
    if params is not None and flops is not None and tokens is None:
        tokens = flops / (6 * params)
        return {"params": params, "tokens": tokens, "flops": flops, "loss": float(law.loss(params, tokens))}
    if flops is not None and params is None and tokens is None:
        n, d = law.compute_optimal(flops)
        return {
            "params": n,
            "tokens": d,
            "flops": flops,
            "loss": float(law.loss(n, d)),
            "tokens_per_param": d / n,
            "compute_optimal": True,
        }
    raise TinyLMError(
        "give --params and --tokens, --params and --flops, or --flops alone (the compute-optimal run)"
    )
