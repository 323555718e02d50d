"""Scaling laws: the Chinchilla fits recover a known law, the IsoFLOP minimum and the compute-optimal
closed form are exact, and a real tiny sweep writes its rows, resumes and refuses runs that do not compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.scaling.fit import Law, fit_law, isoflop_profile, power_law
from tinylm.scaling.predict import predict
from tinylm.scaling.sweep import read_rows

CHINCHILLA = Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def synthetic_rows(noise: float = 0.005, seed: int = 0) -> list[dict]:
    """Rows as a sweep writes them, on a 6 × 6 grid of N and D, losses from the Chinchilla law with noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(1e7, 1e9, 6):
        for d in np.geomspace(1e9, 1e11, 6):
            loss = float(CHINCHILLA.loss(n, d) * (1 + noise * rng.standard_normal()))
            rows.append({"name": f"n{n:.0e}-d{d:.0e}", "n_params": int(n), "n_params_non_embedding": int(n),
                         "tokens": int(d), "flops": 6 * n * d, "budget_flops": None, "val_loss": loss,
                         "tokenizer_hash": "abc", "shards": "/data"})  # fmt: skip
    return rows


def test_fit_recovers_a_known_law_and_predicts_ten_times_the_compute():
    rows = synthetic_rows()
    n, d, loss = (np.array([r[k] for r in rows], float) for k in ("n_params", "tokens", "val_loss"))
    law = fit_law(n, d, loss).law
    assert abs(law.alpha - CHINCHILLA.alpha) < 0.03 and abs(law.beta - CHINCHILLA.beta) < 0.03
    n_big, d_big = CHINCHILLA.compute_optimal(10 * max(r["flops"] for r in rows))
    assert law.loss(n_big, d_big) == pytest.approx(CHINCHILLA.loss(n_big, d_big), rel=0.01)


def test_isoflop_parabola_minimum_is_exact_on_noiseless_data():
    n = np.geomspace(1e6, 1e8, 5)
    x0 = np.log(3.3e6 * 4)
    loss = 0.07 * (np.log(n) - x0) ** 2 + 2.5
    d = 1e15 / (6 * n)
    profile = isoflop_profile(1e15, n, d, loss)
    assert profile.n_opt == pytest.approx(np.exp(x0), rel=1e-9)
    assert profile.d_opt == pytest.approx(1e15 / (6 * np.exp(x0)), rel=1e-9)
    assert profile.loss_opt == pytest.approx(2.5, rel=1e-12)
    assert power_law([1e15, 1e16, 1e17], [2e6, 2e6 * 10**0.5, 2e7])[0] == pytest.approx(0.5)
    with pytest.raises(TinyLMError, match="no minimum"):
        isoflop_profile(1e15, n, d, -loss)


@pytest.mark.parametrize("flops", [1e18, 5.76e23])
def test_compute_optimal_closed_form_matches_numerical_minimisation(flops):
    n_opt, d_opt = CHINCHILLA.compute_optimal(flops)
    found = minimize_scalar(lambda x: CHINCHILLA.loss(np.exp(x), flops / (6 * np.exp(x))), bounds=(0, 60),
                            method="bounded", options={"xatol": 1e-10})  # fmt: skip
    assert n_opt == pytest.approx(np.exp(found.x), rel=1e-4)
    assert 6 * n_opt * d_opt == pytest.approx(flops)


def test_predict_answers_each_question_and_refuses_the_rest():
    assert predict(CHINCHILLA, params=1e9, tokens=2e10)["loss"] == pytest.approx(CHINCHILLA.loss(1e9, 2e10))
    same = predict(CHINCHILLA, params=1e9, flops=6 * 1e9 * 2e10)
    assert same["tokens"] == pytest.approx(2e10)
    optimal = predict(CHINCHILLA, flops=5.76e23)
    assert optimal["compute_optimal"] and optimal["tokens_per_param"] == optimal["tokens"] / optimal["params"]
    assert optimal["params"] == pytest.approx(CHINCHILLA.compute_optimal(5.76e23)[0])
    with pytest.raises(TinyLMError, match="give --params and --tokens"):
        predict(CHINCHILLA, tokens=1e9)
    with pytest.raises(TinyLMError, match="flops must be positive"):
        predict(CHINCHILLA, flops=-1)


def isoflop_rows() -> list[dict]:
    """Three IsoFLOP budgets of five sizes each around the optimum, losses from the Chinchilla law."""
    rows = []
    for c in (1e18, 1e19, 1e20):
        n_opt = CHINCHILLA.compute_optimal(c)[0]
        for n in n_opt * np.geomspace(0.1, 10, 5):
            d = c / (6 * n)
            rows.append({"name": f"n{n:.2e}-C{c:.0e}", "n_params": int(n), "n_params_non_embedding": int(n),
                         "tokens": int(d), "flops": c, "budget_flops": c, "val_loss": float(CHINCHILLA.loss(n, d)),
                         "tokenizer_hash": "abc", "shards": "/data"})  # fmt: skip
    return rows


def test_fit_and_predict_from_the_command_line(tmp_path, jsonl, capsys):
    rows = isoflop_rows()
    jsonl(tmp_path / "runs.jsonl", rows)
    assert main(["scaling", "fit", "--sweep", str(tmp_path), "--holdout_largest", "true"]) == 0
    report = json.loads((tmp_path / "fit.json").read_text())
    assert report["runs"] == 15 and abs(report["law"]["alpha"] - 0.34) < 0.03
    iso = report["isoflop"]
    assert len(iso["profiles"]) == 3 and iso["n_opt_exponent"] == pytest.approx(0.28 / 0.62, abs=0.05)
    assert abs(report["holdout"]["error_pct"]) < 1 and report["holdout"]["name"] == rows[10]["name"]
    for png in ("law.png", "isoflop.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "compute-optimal" in capsys.readouterr().out
    assert main(["scaling", "predict", "--fit", str(tmp_path), "--flops", "1e21"]) == 0
    assert "tokens per parameter" in capsys.readouterr().out
    assert main(["scaling", "predict", "--fit", str(tmp_path / "nope.json"), "--flops", "1e21"]) == 2
    assert main(["scaling", "predict", "--fit", str(tmp_path), "--tokens", "1e9"]) == 2


def test_rows_of_different_tokenizers_are_refused(tmp_path, jsonl):
    rows = synthetic_rows()
    rows[3]["tokenizer_hash"] = "def"
    jsonl(tmp_path / "runs.jsonl", rows)
    with pytest.raises(TinyLMError, match="different tokenizers"):
        read_rows(tmp_path)
