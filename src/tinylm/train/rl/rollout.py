"""Rollouts in rounds: what PPO and GRPO train on, sampled from the policy itself and resumable exactly.

The loop makes a micro-batch a pure function of its index; RL data also depends on the policy. A *round* is
one rollout batch followed by `epochs × minibatches` optimizer steps on it. The rollout of round r is
sampled at its first step, from the policy as it is then, with a seed derived from (train.seed, r, rank).
The rollout in progress, and whatever its maker keeps across rounds (PPO's adaptive KL coefficient), is the
objective's state (`Rounds.state_dict`): every checkpoint holds it, so a run resumed at any step, inside a
round or at its start, continues on the same trajectory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import TinyLMError
from ...infer.engine import Sequence, sample
from ...infer.sampling import SamplingParams
from ...models import Backbone
from ..config import TrainConfig
from ..distributed import is_sharded


@dataclass
class RLConfig:
    """Rollout and optimisation knobs shared by PPO and GRPO.

    Each process samples `train.batch_size × train.grad_accum × minibatches` completions per round (at
    temperature 1, so the sampling policy is the policy being optimised), then takes `epochs ×
    minibatches` optimizer steps on them.
    """

    max_new_tokens: int = 64
    epochs: int = 1
    """Optimisation passes over each rollout batch."""
    minibatches: int = 1
    """Optimizer steps per pass."""
    clip: float = 0.2
    """Clip range ε of the probability ratio."""
    eval_prompts: int = 32
    """Held-out prompts sampled at each evaluation (0: no evaluation)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("max_new_tokens", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise TinyLMError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.clip < 1:
            raise TinyLMError(f"clip must be in (0, 1), got {self.clip}")


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed from any tuple of values, so (seed, round, rank) streams never overlap by accident."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class Sampler:
    """The policy as the engine samples it, at temperature 1 with a seed.

    Under FSDP2 the policy's weights are sharded and every forward pass is a collective, but processes
    sampling different prompts take different numbers of steps; so each process samples from a plain copy,
    refreshed from the gathered weights before each use (as DeepSpeed-Chat's hybrid engine does).
    Otherwise the policy itself samples.
    """

    def __init__(self, policy: Backbone, tokenizer) -> None:
        self.policy, self.tokenizer = policy, tokenizer
        self._copy: Backbone | None = None

    def model(self) -> Backbone:
        if not is_sharded(self.policy):
            return self.policy
        state = {k: getattr(v, "full_tensor", lambda v=v: v)() for k, v in self.policy.state_dict().items()}
        if self._copy is None:
            self._copy = self.policy.blank().to(next(iter(state.values())).device).eval()
        self._copy.load_state_dict(state)
        return self._copy

    def __call__(self, prompts: list[list[int]], max_new_tokens: int, seed: int) -> list[Sequence]:
        """One completion per prompt; row i uses seed + i."""
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
        return sample(self.model(), self.tokenizer, prompts, params)


class Rounds:
    """Micro-batch index -> the rows of the current round's rollout that it trains on (the objective's state).

    `make(round, seed)` samples and scores a round's rollout on this process: a dict of tensors whose first
    dimension is `rollout_size`. Step s of round r = s // K takes, in pass e, minibatch m of a permutation
    drawn from (seed, r, e), and cuts it into `grad_accum` micro-batches. `keeps` (PPO's KL controller) is
    saved and restored with the rollout.
    """

    def __init__(
        self,
        config: RLConfig,
        train: TrainConfig,
        rank: int,
        world_size: int,
        make: Callable[[int, int], dict[str, torch.Tensor]],
        keeps: Any = None,
    ) -> None:
        self.config, self.train, self.rank, self.make, self.keeps = config, train, rank, make, keeps
        self.steps_per_round = config.epochs * config.minibatches
        self.micro_per_step = train.grad_accum * world_size
        self.rollout_size = train.batch_size * train.grad_accum * config.minibatches
        self.round: int | None = None
        self.rollout: dict[str, torch.Tensor] = {}

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        step, slot = divmod(index, self.micro_per_step)
        micro = slot % self.train.grad_accum
        rnd, k = divmod(step, self.steps_per_round)
        epoch, minibatch = divmod(k, self.config.minibatches)
        if self.round != rnd:
            if k != 0:
                raise TinyLMError(
                    f"no rollout of round {rnd} to resume from; the checkpoint holds round {self.round}"
                )
            self.rollout = self.make(rnd, derive_seed(self.train.seed, "rollout", rnd, self.rank))
            self.round = rnd
        perm = torch.randperm(
            self.rollout_size,
            generator=torch.Generator().manual_seed(derive_seed(self.train.seed, rnd, epoch, self.rank)),
        )
        start = minibatch * self.train.batch_size * self.train.grad_accum + micro * self.train.batch_size
        rows = perm[start : start + self.train.batch_size]
        return {name: t[rows] for name, t in self.rollout.items()}

    def state_dict(self) -> dict[str, Any]:
        keeps = self.keeps.state_dict() if self.keeps is not None else {}
        return {"round": -1 if self.round is None else self.round, "rollout": self.rollout, "keeps": keeps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = None if state["round"] < 0 else state["round"]
        self.rollout = state["rollout"]
        if self.keeps is not None:
            self.keeps.load_state_dict(state["keeps"])
