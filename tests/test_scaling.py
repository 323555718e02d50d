"""Scaling laws: the Chinchilla fits recover a known law, the IsoFLOP minimum and the compute-optimal
closed form are exact, and a real tiny sweep writes its rows, resumes and refuses runs that do not compare."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from tinylm.cli import main
from tinylm.data.bpe import train_tokenizer
from tinylm.data.shards import prepare_shards
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
    assert profile.loss_opt == pytest.approx(2.5, rel=1e-12) and profile.interior
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


SWEEP = ["--sizes", "[32x1, 64x1]", "--head_dim", "32", "--context", "32"]
SWEEP += ["--train.batch_size", "4", "--train.warmup_steps", "1", "--train.eval_every", "0"]
SWEEP += ["--train.eval_batches", "1", "--train.device", "cpu", "--train.log_every", "1"]


@pytest.mark.usefixtures("one_thread")
def test_a_real_sweep_writes_its_rows_and_resumes(tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    budgets = ["--flops", "[2e8, 4e8]"]
    assert (
        main(["scaling", "sweep", "--shards", str(tiny_shards_dir), "--out", str(out), *SWEEP, *budgets]) == 0
    )
    printed = capsys.readouterr().out
    assert "4 runs (0 already finished)" in printed and "run 4/4" in printed and "left at" in printed
    rows = read_rows(out)
    assert len(rows) == 4 and {r["budget_flops"] for r in rows} == {2e8, 4e8}
    for r in rows:
        assert r["tokens"] == r["steps"] * 4 * 32 and r["flops"] == r["tokens"] * r["flops_per_token"]
        assert abs(r["flops"] - r["budget_flops"]) <= r["flops_per_token"] * 4 * 32 / 2  # within half a step
        assert r["val_loss"] > 0 and r["val_bpb"] > 0 and r["n_params_non_embedding"] < r["n_params"]
    assert (out / "runs.csv").read_text().splitlines()[0].startswith("name,family,")
    small = next(r for r in rows if r["name"] == "d32-l1_C2e08")
    assert small["d_model"] == 32 and small["n_head"] == 1
    assert (out / "runs" / small["name"] / "model" / "model.safetensors").is_file()

    metrics = {r["name"]: (out / "runs" / r["name"] / "metrics.jsonl").read_text() for r in rows}
    assert (
        main(["scaling", "sweep", "--shards", str(tiny_shards_dir), "--out", str(out), *SWEEP, *budgets]) == 0
    )
    assert "4 runs (4 already finished)" in capsys.readouterr().out
    assert {r["name"]: (out / "runs" / r["name"] / "metrics.jsonl").read_text() for r in rows} == metrics

    # A run trained on another tokenizer, dropped into the sweep, is refused by name.
    foreign = out / "runs" / "foreign"
    shutil.copytree(out / "runs" / small["name"], foreign)
    row = json.loads((foreign / "scaling.json").read_text())
    (foreign / "scaling.json").write_text(json.dumps({**row, "name": "foreign", "tokenizer_hash": "0" * 64}))
    assert (
        main(["scaling", "sweep", "--shards", str(tiny_shards_dir), "--out", str(out), *SWEEP, *budgets]) == 2
    )
    assert "foreign" in capsys.readouterr().err


def test_a_sweep_on_another_tokenizer_is_refused(tiny_corpus_dir, tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["scaling", "sweep", "--out", str(out), *SWEEP, "--steps", "[2]"]
    assert main([*args, "--shards", str(tiny_shards_dir), "--sizes", "[32x1]"]) == 0
    other = tmp_path / "other_tokenizer"
    train_tokenizer(str(tiny_corpus_dir), str(other), vocab_size=512)
    prepare_shards(str(tiny_corpus_dir), str(other), str(tmp_path / "other_shards"), workers=1)
    capsys.readouterr()
    assert main([*args, "--shards", str(tmp_path / "other_shards")]) == 2
    assert "tokenizer_hash" in capsys.readouterr().err


@pytest.mark.parametrize(
    "grid, message",
    [
        (["--flops", "[1e9]", "--steps", "[2]"], "either --flops (IsoFLOP) or --steps"),
        (["--steps", "[0, 2]"], "steps: expected distinct positive budgets"),
        (["--flops", "[1]"], "is less than one step of size d32-l1"),
        (["--steps", "[1]"], "train.warmup_steps=1 is not below the 1 steps"),
        (["--steps", "[2]", "--sizes", "[12y3]"], "size '12y3': expected D_MODELxN_LAYER"),
        (["--steps", "[2]", "--sizes", "[48x1]"], "d_model 48 is not a multiple of head_dim 32"),
    ],
)
def test_bad_grids_exit_2(grid, message, tiny_shards_dir, tmp_path, capsys):
    argv = ["scaling", "sweep", "--shards", str(tiny_shards_dir), "--out", str(tmp_path / "s"), *SWEEP, *grid]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
