"""What PPO and GRPO set up the same way: the starting policy, its prompts, and the held-out evaluation.

Everything a run needs is loaded and checked before its directory is claimed, so bad input leaves nothing
behind. The held-out evaluation samples one answer per held-out prompt (temperature 1, the run's seed) and
reports the reward, the metrics of the tasks it scores (e.g. exact_form) and the KL to the reference; the
report runs it on the starting model too, so results.json shows before and after on the same prompts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...data.prompts import EncodedPrompt, encode_prompts
from ...data.splits import split_files
from ...eval.sampled import evaluate_answers
from ...infer.sampling import SamplingParams
from ...models import Backbone, load_model, require_generative
from ...tasks import metrics_for
from ...tasks.rewards import Reward, check_rows, reward_name, score
from ...tokenizer import Tokenizer
from ..loop import Objective
from ..stage import Plan, Run
from .rollout import RLConfig, Rounds, Sampler


@dataclass
class RLSetup:
    """A PPO or GRPO run's starting point, loaded and checked."""

    model: str
    policy: Backbone
    tokenizer: Tokenizer
    prompts: list[EncodedPrompt]
    eval_prompts: list[EncodedPrompt]
    reward: str | Reward | None
    config: RLConfig
    record: dict[str, Any]
    sampler: Sampler

    @classmethod
    def load(
        cls,
        data: str,
        model: str,
        eval_data: str | None,
        reward: str | Reward | None,
        config: RLConfig,
        trained_on_reward: bool = True,
        **settings: Any,
    ) -> RLSetup:
        """`trained_on_reward` False: `reward` only measures, so training prompts need not carry its fields;
        `settings` join the recorded run config."""
        tok = Tokenizer.load(model)
        policy = load_model(model)
        require_generative(policy.config, "RL (tinylm ppo / grpo)")
        context, n = policy.config.max_seq_len, config.max_new_tokens
        train_file, eval_file = split_files(data, eval_data)
        prompts = encode_prompts(train_file, tok, context, n)
        if trained_on_reward:
            check_rows(reward, prompts)
        eval_prompts = []
        if eval_file is not None and reward is not None and config.eval_prompts:
            eval_prompts = check_rows(
                reward, encode_prompts(eval_file, tok, context, n)[: config.eval_prompts]
            )
        record = {
            "data": str(train_file),
            "eval_data": str(eval_file) if eval_file else None,
            "model": str(model),
            "reward": reward_name(reward) if reward is not None else None,
            **settings,
            "config": config,
        }
        return cls(model, policy, tok, prompts, eval_prompts, reward, config, record, Sampler(policy, tok))

    def reference(self, run: Run) -> Backbone:
        """The frozen reference: the starting model, loaded again."""
        return load_model(self.model, device=run.device).requires_grad_(False)

    def choose(self, rng: random.Random, n: int) -> list[EncodedPrompt]:
        """`n` training prompts, distinct while the file has enough."""
        return rng.sample(self.prompts, n) if n <= len(self.prompts) else rng.choices(self.prompts, k=n)

    def scores(self, prompts: list[EncodedPrompt], texts: list[str]) -> list[float]:
        """The reward of each answer to its prompt."""
        return score(self.reward, texts, [p.fields for p in prompts])

    def plan(
        self,
        run: Run,
        module: nn.Module,
        reference: nn.Module,
        make: Callable,
        loss: Callable,
        keeps: Any = None,
    ) -> Plan:
        """The loop's objective (rounds of rollouts made by `make`), the held-out evaluation and report."""
        train, sampler = run.train, self.sampler
        rounds = Rounds(self.config, train, run.dist.rank, run.dist.world_size, make, keeps)
        params = SamplingParams(max_new_tokens=self.config.max_new_tokens, temperature=1.0, seed=train.seed)

        def evaluate(model: nn.Module) -> dict[str, float]:
            prompts, metrics = self.eval_prompts, metrics_for(self.reward)
            return evaluate_answers(
                model, self.tokenizer, prompts, self.reward, params, metrics, reference
            ).means

        def report(final: nn.Module, result) -> dict[str, Any]:
            if not self.eval_prompts:
                return {}
            # The loop evaluates after its last step, on these very weights; only a run without that
            # evaluation (none recorded) samples the held-out answers again.
            policy = final if isinstance(final, Backbone) else final.body  # PPO's carries a value head
            after = {f"heldout_{k}": v for k, v in (result.eval_metrics or evaluate(policy)).items()}
            # The frozen reference is the starting policy: same prompts and seed give the "before" number.
            before = {f"start_heldout_{k}": v for k, v in evaluate(reference).items() if k != "kl"}
            print(
                f"{run.name}: held-out " + ", ".join(f"{k} {v:.4f}" for k, v in {**after, **before}.items())
            )
            return {**after, **before}

        objective = Objective(
            rounds.batch,
            loss,
            (lambda m: evaluate(sampler.model())) if self.eval_prompts else None,
            state=rounds,
        )
        card = [f"`{self.model}` aligned with {run.name.upper()} on the prompts of `{self.record['data']}`."]
        return Plan(module, objective, self.model, report, card)
