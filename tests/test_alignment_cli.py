"""`tinylm reward train|score`, `dpo`, `ppo`, `grpo` and `eval run` end to end on a tiny model: each runs in
seconds, resumes exactly after a stop signal, and refuses bad input with exit 2 and a clear message."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from tinylm.cli import main
from tinylm.data.bpe import train_tokenizer
from tinylm.eval.judge import summarize as summarize_judged
from tinylm.models import ModelConfig, build_model
from tinylm.models.checkpoint import load_model, save_model
from tinylm.tasks.poetry import poem_reward

POEMS = [
    ("五言绝句", "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"),
    ("五言绝句", "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"),
    ("五言绝句", "春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"),
    ("七言绝句", "朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。"),
]
TRAIN = [
    "--train.device",
    "cpu",
    "--train.batch_size",
    "4",
    "--train.warmup_steps",
    "1",
    "--train.lr",
    "1e-3",
]


def ask(form: str, i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"写一首{form}，题为《题{i}》。"}]


@pytest.fixture(scope="module")
def data(tmp_path_factory, jsonl) -> Path:
    """prefs/ (train 8 pairs + 1 identical, test 4), poems/ and arith/ prompt files (train + test)."""
    root = tmp_path_factory.mktemp("align_data")
    pairs = []
    for i in range(12):
        form, text = POEMS[i % len(POEMS)]
        rejected = text.replace("。\n", "\n", 1)
        pairs.append({"prompt": ask(form, i), "chosen": text, "rejected": rejected, "form": form})
    identical = {**pairs[0], "rejected": pairs[0]["chosen"]}
    jsonl(root / "prefs" / "train.jsonl", [*pairs[:8], identical])
    jsonl(root / "prefs" / "test.jsonl", pairs[8:])
    poems = [
        {"messages": [*ask(f, i), {"role": "assistant", "content": x}], "form": f}
        for i, (f, x) in enumerate(POEMS * 3)
    ]
    jsonl(root / "poems" / "train.jsonl", poems[:8])
    jsonl(root / "poems" / "test.jsonl", poems[8:])
    arith = [
        {"prompt": f"Ann has {a} apples and gets {a} more. How many?", "answer": 2 * a} for a in range(2, 14)
    ]
    jsonl(root / "arith" / "train.jsonl", arith[:8])
    jsonl(root / "arith" / "test.jsonl", arith[8:])
    return root


def tiny_policy(root: Path, tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=1024, d_model=32, n_layer=1, n_head=2, d_ff=64, max_seq_len=96)
    return save_model(build_model(config), root / "policy", tokenizer_dir)


@pytest.fixture(scope="module")
def policy(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy"), tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def reward_model(data, policy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "run"
    assert (
        main(
            [
                "reward",
                "train",
                "--data",
                str(data / "prefs"),
                "--model",
                str(policy),
                "--out",
                str(out),
                *TRAIN,
                "--train.max_steps",
                "3",
            ]
        )
        == 0
    )
    return out


def losses(run: Path) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


def interrupted_then_resumed(monkeypatch, module, name: str, call: int, args: list[str], out: Path) -> None:
    """Run `args` with SIGINT raised during the `call`-th call of module.name (exit 130), then rerun them."""
    original, calls = getattr(module, name), []

    def interrupting(*a, **kw):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGINT)
        return original(*a, **kw)

    monkeypatch.setattr(module, name, interrupting)
    assert main(args) == 130
    monkeypatch.setattr(module, name, original)
    assert main(args) == 0


def assert_same_run(a: Path, b: Path) -> None:
    assert losses(a) == pytest.approx(losses(b), rel=1e-5, abs=1e-7)
    for (n, p), (_, q) in zip(
        load_model(a / "model").state_dict().items(),
        load_model(b / "model").state_dict().items(),
        strict=True,
    ):
        assert torch.allclose(p, q, atol=1e-6), n


def test_reward_model_trains_scores_and_counts_identical_pairs(data, reward_model, capsys):
    results = json.loads((reward_model / "results.json").read_text())
    assert results["step"] == 3 and results["train_pairs"] == 8 and results["heldout_pairs"] == 4
    assert 0 <= results["heldout_accuracy"] <= 1
    assert (reward_model / "model" / "reward_head.safetensors").is_file()
    assert (
        main(
            [
                "reward",
                "score",
                "--model",
                str(reward_model / "model"),
                "--data",
                str(data / "prefs" / "test.jsonl"),
            ]
        )
        == 0
    )
    assert f"pairwise accuracy {results['heldout_accuracy']:.4f}" in capsys.readouterr().out
    assert (
        main(
            [
                "reward",
                "score",
                "--model",
                str(reward_model / "model"),
                "--data",
                str(data / "poems" / "test.jsonl"),
                "--out",
                str(data / "scores.jsonl"),
            ]
        )
        == 0
    )
    assert len((data / "scores.jsonl").read_text().splitlines()) == 4


def test_reward_identical_pairs_are_dropped_and_counted(data, policy, tmp_path, capsys):
    args = [
        "reward",
        "train",
        "--data",
        str(data / "prefs"),
        "--model",
        str(policy),
        "--out",
        str(tmp_path / "r"),
        *TRAIN,
        "--train.max_steps",
        "1",
    ]
    assert main(args) == 0
    assert "8 pairs; dropped 1 with identical chosen and rejected" in capsys.readouterr().out


def test_reward_resumes_exactly(monkeypatch, data, policy, tmp_path):
    import tinylm.train.stages.reward as reward

    args = [
        "reward",
        "train",
        "--data",
        str(data / "prefs"),
        "--model",
        str(policy),
        *TRAIN,
        "--train.max_steps",
        "4",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    interrupted_then_resumed(
        monkeypatch, reward, "bradley_terry_loss", 2, [*args, "--out", str(tmp_path / "b")], tmp_path / "b"
    )
    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "b"), rel=1e-5)


def test_dpo_end_to_end_and_resume(monkeypatch, data, policy, tmp_path):
    import tinylm.train.stages.dpo as dpo

    args = [
        "dpo",
        "--data",
        str(data / "prefs"),
        "--model",
        str(policy),
        "--beta",
        "0.5",
        *TRAIN,
        "--train.max_steps",
        "4",
        "--train.eval_every",
        "2",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["step"] == 4 and 0 <= results["heldout_reward_accuracy"] <= 1
    assert (tmp_path / "a" / "reference_logps.safetensors").is_file()
    first = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)  # the policy starts as its own reference
    interrupted_then_resumed(
        monkeypatch, dpo, "dpo_loss", 3, [*args, "--out", str(tmp_path / "b")], tmp_path / "b"
    )
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_ppo_with_learned_reward_resumes_mid_round(monkeypatch, data, policy, reward_model, tmp_path):
    import tinylm.train.stages.ppo as ppo

    args = [
        "ppo",
        "--data",
        str(data / "poems"),
        "--model",
        str(policy),
        "--reward_model",
        str(reward_model / "model"),
        "--reward",
        "poem",
    ]
    args += [
        *TRAIN,
        "--train.max_steps",
        "4",
        "--train.checkpoint_every",
        "4",
        "--ppo.max_new_tokens",
        "12",
        "--ppo.eval_prompts",
        "2",
    ]
    args += [
        "--ppo.epochs",
        "1",
        "--ppo.minibatches",
        "2",
        "--ppo.target_kl",
        "1.0",
        "--train.eval_every",
        "4",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    step = metrics[0]
    for key in ("policy_loss", "value_loss", "clip_frac", "entropy", "score", "kl", "kl_coef"):
        assert key in step, key
    assert metrics[2]["kl_coef"] != metrics[0]["kl_coef"]  # adapted after round 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {"heldout_reward", "heldout_exact_form", "heldout_kl"} <= set(results)
    assert (tmp_path / "a" / "model" / "value_head.safetensors").is_file()
    # Rounds of 2 steps: a stop during step 1 checkpoints inside round 0, which holds that round's rollout.
    interrupted_then_resumed(
        monkeypatch, ppo, "ppo_loss", 1, [*args, "--out", str(tmp_path / "b")], tmp_path / "b"
    )
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_grpo_arithmetic_resumes_at_a_round_boundary(monkeypatch, data, policy, tmp_path):
    import tinylm.train.stages.grpo as grpo

    args = ["grpo", "--data", str(data / "arith"), "--model", str(policy), "--reward", "arithmetic", *TRAIN]
    args += [
        "--train.max_steps",
        "4",
        "--train.checkpoint_every",
        "2",
        "--grpo.group_size",
        "2",
        "--grpo.minibatches",
        "2",
    ]
    args += ["--grpo.max_new_tokens", "8", "--grpo.eval_prompts", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    step = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"reward", "kl", "clip_frac", "informative_groups"} <= set(step)
    assert step["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step's policy is the reference
    interrupted_then_resumed(
        monkeypatch, grpo, "grpo_loss", 2, [*args, "--out", str(tmp_path / "b")], tmp_path / "b"
    )
    assert_same_run(tmp_path / "a", tmp_path / "b")
    out = tmp_path / "eval.json"
    assert main(["eval", "run", "arithmetic", "--model", str(tmp_path / "a" / "model"), "--data", str(data / "arith"),
                 "--reference", str(policy), "--sampling.max_new_tokens", "8", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())  # the trained policy has moved away from its reference
    assert result["scored_by"] == "arithmetic" and result["prompts"] == 4 and result["kl"] != 0


def test_reward_model_with_another_tokenizer_is_refused(data, policy, reward_model, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc def ghi " * 200, encoding="utf-8")
    train_tokenizer(str(corpus), str(tmp_path / "tok"), vocab_size=300)
    other = tiny_policy(tmp_path, tmp_path / "tok")
    args = [
        "ppo",
        "--data",
        str(data / "poems"),
        "--model",
        str(other),
        "--reward_model",
        str(reward_model / "model"),
        "--out",
        str(tmp_path / "p"),
        *TRAIN,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "uses a different tokenizer than the policy" in err and "Traceback" not in err
    assert not (tmp_path / "p" / "model").exists()


@pytest.mark.parametrize(
    ("command", "row", "message"),
    [
        (["reward", "train"], {"prompt": "写诗", "chosen": "好"}, "missing field 'rejected'"),
        (["dpo"], {"chosen": "好", "rejected": "坏"}, "missing field 'prompt'"),
        (
            ["grpo", "--reward", "poem"],
            {"prompt": "写诗"},
            "has no 'form' field, which the poem reward needs",
        ),
        (["ppo", "--reward", "arithmetic"], {"prompt": "1+1?"}, "has no 'answer' field"),
    ],
)
def test_bad_rows_exit_2_naming_the_problem(command, row, message, policy, tmp_path, capsys, jsonl):
    bad = jsonl(tmp_path / "bad.jsonl", [row])
    assert (
        main([*command, "--data", str(bad), "--model", str(policy), "--out", str(tmp_path / "o"), *TRAIN])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_judged_pairs_keep_the_best_and_the_worst_answer_and_train_a_reward_model(
    data, policy, tmp_path, capsys
):
    out = tmp_path / "judged"
    judge = ["data", "judge", "--model", str(policy), "--data", str(data / "poems"), "--reward", "poem"]
    assert main([*judge, "--samples", "8", "--sampling.max_new_tokens", "32", "--out", str(out)]) == 0
    counts = json.loads((out / "manifest.json").read_text())["rows"]
    for split, prompts in (("train", 8), ("test", 4)):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == counts[split] and counts[split] + counts[f"{split}_ties"] == prompts
        for r in rows:  # the stored rewards are the judge's, and chosen won
            assert poem_reward(r["chosen"][0]["content"], r["form"]) == r["chosen_reward"]
            assert poem_reward(r["rejected"][0]["content"], r["form"]) == r["rejected_reward"]
            assert r["chosen_reward"] > r["rejected_reward"] and r["prompt"][0]["role"] == "user"
    assert counts["train"] > 0
    assert f"{counts['train']:,} training and {counts['test']:,} held-out pairs" in summarize_judged(str(out))
    rm = ["reward", "train", "--data", str(out), "--model", str(policy), *TRAIN, "--train.max_steps", "2"]
    assert main([*rm, "--out", str(tmp_path / "rm")]) == 0
    assert main([*judge, "--samples", "1", "--out", str(tmp_path / "one")]) == 2
    assert "samples must be at least 2" in capsys.readouterr().err
