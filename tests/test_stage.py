"""The stage lifecycle's promises, in one process: a failed start leaves nothing behind, activation
checkpointing reaches the body of models with heads, and a Python reward callable trains like a named one."""

from __future__ import annotations

import json

import pytest
import yaml

from tinylm.cli import main
from tinylm.train import TrainConfig
from tinylm.train.rl.grpo import GRPOConfig
from tinylm.train.stages.grpo import grpo

QUICK = [
    "--train.max_steps",
    "2",
    "--train.batch_size",
    "4",
    "--train.warmup_steps",
    "1",
    "--train.device",
    "cpu",
]


def losses(run) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.parametrize(
    ("bad", "good", "message"),
    [
        (
            ["--mode", "lora", "--lora.rank", "0"],
            ["--mode", "lora", "--lora.rank", "8"],
            "lora.rank must be >= 1",
        ),
        (
            ["--mode", "partial", "--last_blocks", "5"],
            ["--mode", "partial", "--last_blocks", "1"],
            "last_blocks",
        ),
    ],
    ids=["refused-while-parsing", "refused-after-claiming"],
)
def test_a_refused_start_leaves_nothing_so_the_corrected_command_runs(
    tiny_policy, tiny_tasks, tmp_path, capsys, bad, good, message
):
    args = [
        "sft",
        "--model",
        str(tiny_policy),
        "--data",
        str(tiny_tasks / "sft"),
        "--out",
        str(tmp_path / "s2"),
    ]
    assert main([*args, *QUICK, *bad]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()
    assert main([*args, *QUICK, *good]) == 0


@pytest.mark.parametrize(
    "command",
    [
        ["reward", "train", "--data", "prefs"],
        ["ppo", "--data", "sft", "--reward", "poem", "--ppo.max_new_tokens", "6", "--ppo.minibatches", "1"],
    ],
    ids=["reward-model", "policy-with-value"],
)
def test_activation_checkpointing_reaches_the_body_of_a_model_with_heads(
    tiny_policy, tiny_tasks, tmp_path, command
):
    command = [c if c not in ("prefs", "sft") else str(tiny_tasks / c) for c in command]
    args = [*command, "--model", str(tiny_policy), *QUICK, "--train.checkpoint_every", "0"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "ac"), "--train.activation_checkpointing", "true"]) == 0
    assert losses(tmp_path / "ac") == pytest.approx(losses(tmp_path / "plain"), rel=1e-5)


def test_grpo_takes_a_reward_callable_in_trls_shape(tiny_policy, tiny_tasks, tmp_path):
    seen = []

    def shortest(completions: list[str], answer: list[int], **fields) -> list[float]:
        """Reward answers that end early; reads the rows' `answer` column like a named reward would."""
        seen.append((len(completions), len(answer)))
        return [-float(len(c)) for c in completions]

    train = TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, checkpoint_every=0, device="cpu")
    config = GRPOConfig(group_size=2, max_new_tokens=6, eval_prompts=2)
    results = grpo(
        str(tiny_tasks / "arith"), str(tiny_policy), str(tmp_path / "g"), shortest, grpo=config, train=train
    )
    assert seen and all(n == m for n, m in seen)  # one answer per completion, aligned
    assert results["heldout_reward"] <= 0 and "start_heldout_reward" in results
    assert yaml.safe_load((tmp_path / "g" / "config.yaml").read_text())["reward"] == "shortest"
