"""`tinylm ppo`: RLHF with Proximal Policy Optimization, as InstructGPT did it (see `tinylm.train.rl.ppo`).

The reward is a learned reward model (`--reward_model`, from `tinylm reward train`) or a verifiable reward.
The value head shares the policy's trunk (`PolicyWithValue`): one forward pass yields both, which on a CPU
halves the cost of a separate critic; <out>/model holds the policy and value_head.safetensors. Logged per
step: loss, policy and value loss, the rollout's score and KL, the KL coefficient, entropy and clip fraction.
"""

from __future__ import annotations

from typing import Any

from ...errors import TinyLMError
from ...eval.reward_model import RewardScorer
from ...models.heads import PolicyWithValue
from ...tasks.rewards import Reward
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..rl.ppo import PPOConfig, PPORollouts, ppo_loss
from ..rl.setup import RLSetup
from ..stage import Plan, Run, run_stage


def ppo(
    data: str,
    model: str,
    out: str,
    reward_model: str | None = None,
    reward: str | Reward | None = None,
    eval_data: str | None = None,
    ppo: PPOConfig | None = None,
    train: TrainConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """RLHF with PPO: policy, frozen reference, value head, and a learned or verifiable reward.

    Args:
        data: Prompt JSONL (conversations, prompt / completion or prompt-only rows), or a directory with
            train.jsonl and test.jsonl.
        model: Model to start from (usually the SFT model); it is also the frozen reference.
        out: Run directory; rerunning the same command resumes.
        reward_model: Reward model directory from `tinylm reward train`; it must use the policy's tokenizer.
        reward: A verifiable reward (poem, arithmetic, ...; from Python any callable). Trained on without a
            reward_model; with one, it only measures the policy on held-out prompts.
        eval_data: Held-out prompt JSONL (default: test.jsonl beside train.jsonl when data is a directory).
        ppo: PPO's hyperparameters.
        train: Optimizer, schedule and budget; train.batch_size counts completions per micro-batch.
        overwrite: Replace an output directory that holds a different run.
    """
    config, train = ppo or PPOConfig(), train or TrainConfig()
    if reward_model is None and reward is None:
        raise TinyLMError("give --reward_model DIR (a learned reward) or --reward poem|arithmetic")
    scorer = None
    if reward_model is not None:  # checked first: a mismatch should not wait for the policy to load
        scorer, policy_hash = RewardScorer.load(reward_model), Tokenizer.load(model).hash
        if scorer.tokenizer.hash != policy_hash:
            raise TinyLMError(
                f"reward model {reward_model} uses a different tokenizer than the policy {model} "
                f"(tokenizer.json sha256 {scorer.tokenizer.hash[:12]} vs {policy_hash[:12]}); "
                "train the reward model from the policy's checkpoint"
            )
    setup = RLSetup.load(
        data, model, eval_data, reward, config, trained_on_reward=scorer is None, reward_model=reward_model
    )
    rollout_size = train.batch_size * train.grad_accum * config.minibatches

    def scores(prompts: list, texts: list[str]) -> list[float]:
        if scorer is None:
            return setup.scores(prompts, texts)
        return scorer.score(
            [[*p.messages, {"role": "assistant", "content": t}] for p, t in zip(prompts, texts, strict=True)]
        )

    def build(run: Run) -> Plan:
        if scorer is not None:
            scorer.model.to(run.device)
        pv, reference = PolicyWithValue(setup.policy.to(run.device)), setup.reference(run)
        make = PPORollouts(
            pv, reference, setup.sampler, setup.choose, scores, rollout_size, config, setup.tokenizer.pad_id
        )
        return setup.plan(run, pv, reference, make, lambda m, b: ppo_loss(m, b, config), keeps=make)

    return run_stage("ppo", out, {**setup.record, "train": train}, train, overwrite, build)
