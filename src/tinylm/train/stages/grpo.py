"""`tinylm grpo`: Group Relative Policy Optimization on a verifiable reward (see `tinylm.train.rl.grpo`).

Rewards are programs a reader can check (`tinylm.tasks.rewards`): a poem's form and rhyme, whether an
arithmetic answer is right, or any callable from Python. Logged per step: loss, the rollout's mean reward,
KL, clip fraction, and the share of groups with any spread of reward (the ones that teach).
"""

from __future__ import annotations

from typing import Any

from ...errors import TinyLMError
from ...tasks.rewards import Reward
from ..config import TrainConfig
from ..rl.grpo import GRPOConfig, grpo_loss, grpo_rollouts
from ..rl.setup import RLSetup
from ..stage import Plan, Run, run_stage


def grpo(
    data: str,
    model: str,
    out: str,
    reward: str | Reward = "poem",
    eval_data: str | None = None,
    grpo: GRPOConfig | None = None,
    train: TrainConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Align a model with GRPO on a verifiable reward: group sampling, group-normalised advantages, KL to reference.

    Args:
        data: Prompt JSONL whose rows carry what the reward reads (`form` for poem, `answer` for
            arithmetic), or a directory with train.jsonl and test.jsonl.
        model: Model to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        reward: A registered reward (poem, arithmetic, label, exact_form) or, from Python, any callable
            `reward(completions, **row_fields) -> list[float]`.
        eval_data: Held-out prompt JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        grpo: GRPO's hyperparameters.
        train: Optimizer, schedule and budget; train.batch_size counts completions per micro-batch.
        overwrite: Replace an output directory that holds a different run.
    """
    config, train = grpo or GRPOConfig(), train or TrainConfig()
    setup = RLSetup.load(data, model, eval_data, reward, config)
    rollout_size = train.batch_size * train.grad_accum * config.minibatches
    if rollout_size % config.group_size:
        raise TinyLMError(
            f"train.batch_size × train.grad_accum × minibatches = {rollout_size} completions per round "
            f"must be a multiple of group_size={config.group_size}"
        )

    def build(run: Run) -> Plan:
        policy, reference = setup.policy.to(run.device), setup.reference(run)
        make = grpo_rollouts(
            policy,
            reference,
            setup.sampler,
            setup.choose,
            setup.scores,
            rollout_size,
            config,
            setup.tokenizer.pad_id,
        )
        return setup.plan(run, policy, reference, make, lambda m, b: grpo_loss(m, b, config))

    return run_stage("grpo", out, {**setup.record, "train": train}, train, overwrite, build)
