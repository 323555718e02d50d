"""What PPO and GRPO share: prompts, rollouts through the engine, token log-probabilities, KL estimates, the
clipped surrogate, verifiable rewards, and the schedule that keeps a run with on-policy data resumable.

Resume. The shared loop makes a micro-batch a pure function of its index; RL data also depends on the
policy. A *round* is one rollout batch followed by `epochs × minibatches` optimizer steps on it. The
rollout of round r is sampled at its first step, from the policy as it is after step r·K, with a seed
derived from (train.seed, r, rank): a function of the training state the checkpoint restores. So a run
resumed from a checkpoint at a round boundary regenerates exactly the rollout the uninterrupted run drew.
A checkpoint inside a round (a stop signal, or the end of a time budget) cannot regenerate it, since the
policy has moved; so each process also writes its current rollout to `<out>/rollout-rank<k>.pt`
(atomically), and a resume inside round r reads it back. Periodic checkpoints must fall on round
boundaries (`check_schedule`), so the file on disk is always the one a resume needs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.chat import Messages, encode_prompt, load_prompts
from ..errors import TinyLMError
from ..eval.rewards import arithmetic_reward, is_exact_form, poem_reward
from ..infer.engine import Engine, Sequence
from ..infer.sampling import SamplingParams
from ..io import atomic_dir, atomic_file, read_json, write_json
from ..model.checkpoint import load_checkpoint, load_model, save_checkpoint
from ..model.decoder import TinyLM
from ..model.heads import ScalarHead, save_head
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .distributed import Dist
from .loop import LossOutput, Task, seed_everything, start_run
from .loop import train as train_loop
from .reward import split_files

REWARD_FIELDS = {"poem": "form", "arithmetic": "answer"}
"""Verifiable rewards and the prompt field each one checks the completion against."""


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

    def validate(self) -> None:
        for name in ("max_new_tokens", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise TinyLMError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.clip < 1:
            raise TinyLMError(f"clip must be in (0, 1), got {self.clip}")


@dataclass
class RLPrompt:
    """A prompt ready for sampling: its token ids, its conversation (a learned reward model reads it) and the
    row's fields (a verifiable reward reads them)."""

    ids: list[int]
    messages: Messages
    fields: dict[str, Any]


def score(reward: str, text: str, fields: dict[str, Any]) -> dict[str, float]:
    """A completion's verifiable scores: "reward" (what RL maximises) and, for poems, "exact_form"."""
    if reward == "poem":
        return {
            "reward": poem_reward(text, fields["form"]),
            "exact_form": float(is_exact_form(text, fields["form"])),
        }
    return {"reward": arithmetic_reward(text, fields["answer"])}


def load_rl_prompts(
    path: str | Path, tokenizer, context: int, max_new_tokens: int, reward: str | None
) -> list[RLPrompt]:
    """Prompts of a JSONL file, encoded; those that leave no room for `max_new_tokens` are dropped (and
    reported). With a verifiable `reward`, every row must carry the field it checks."""
    if reward is not None and reward not in REWARD_FIELDS:
        raise TinyLMError(f"reward must be one of {', '.join(REWARD_FIELDS)}, got {reward!r}")
    out, too_long = [], 0
    for i, p in enumerate(load_prompts(path), 1):
        if reward is not None and REWARD_FIELDS[reward] not in p.fields:
            raise TinyLMError(
                f"{path}: row {i} has no {REWARD_FIELDS[reward]!r} field, which the {reward} reward needs"
            )
        ids = encode_prompt(p.messages, tokenizer)
        if len(ids) + max_new_tokens > context:
            too_long += 1
            continue
        out.append(RLPrompt(ids, p.messages, p.fields))
    if too_long:
        print(
            f"{path}: dropped {too_long} prompts longer than context {context} - max_new_tokens {max_new_tokens}"
        )
    if not out:
        raise TinyLMError(f"{path}: no prompt fits context {context} with {max_new_tokens} new tokens")
    return out


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed from any tuple of values, so (seed, round, rank) streams never overlap by accident."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def sample(
    model: TinyLM, tokenizer, prompts: list[list[int]], max_new_tokens: int, temperature: float, seed: int
) -> list[Sequence]:
    """Sample one completion per prompt with the generation engine (row i uses seed + i); the model's
    train / eval mode is restored afterwards."""
    was_training = model.training
    engine = Engine(model, tokenizer, max_batch_size=max(1, len(prompts)))
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    seqs = engine.generate(prompts, params)
    model.train(was_training)
    return seqs


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt + completion rows, right-padded: input_ids, attention_mask (B, T), and action_mask (B, T-1),
    true where the next token (the one position t predicts) is a completion token."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    T = max(map(len, rows))
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    action_mask = torch.zeros((len(rows), T - 1), dtype=torch.bool)
    for i, (p, row) in enumerate(zip(prompts, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        action_mask[i, len(p) - 1 : len(row) - 1] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "action_mask": action_mask}


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) for every position t (B, T-1), from logits (B, T, V)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position but the last (B, T-1)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (the mean is kept if not `shift_mean`); 0 outside the mask."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from a sample of π: r − log r − 1 with r = π_ref/π (Schulman's k3),
    unbiased, always ≥ 0, and lower-variance than log(π/π_ref)."""
    d = ref_logp - logp
    return d.exp() - d - 1


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped policy loss, mean over action tokens, and the share of tokens where clipping binds.

    loss = mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))), ρ = exp(log π − log π_old); `advantages` broadcasts
    (per token for PPO, per sequence for GRPO)."""
    ratio = (logp - old_logp).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


@torch.no_grad()
def sequence_logprobs(model: TinyLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token log-probabilities (B, T-1) of packed rows under `model` (no gradient)."""
    return token_logprobs(model(batch["input_ids"], batch["attention_mask"]), batch["input_ids"])


@torch.no_grad()
def evaluate_policy(
    policy: TinyLM,
    tokenizer,
    prompts: list[RLPrompt],
    reward: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    reference: TinyLM | None = None,
) -> dict[str, float]:
    """Mean verifiable scores of one sample per prompt; with a `reference`, also "kl": the mean over samples
    of Σ_t log π/π_ref, a Monte Carlo estimate of the sequence-level KL(π‖π_ref) (meaningful at temperature 1)."""
    ids = [p.ids for p in prompts]
    seqs = sample(policy, tokenizer, ids, max_new_tokens, temperature, seed)
    totals: dict[str, float] = {}
    for seq, p in zip(seqs, prompts, strict=True):
        for k, v in score(reward, seq.text, p.fields).items():
            totals[k] = totals.get(k, 0.0) + v
    out = {k: v / len(prompts) for k, v in totals.items()}
    if reference is not None:
        device = next(policy.parameters()).device
        batch = {k: v.to(device) for k, v in pack(ids, [s.token_ids for s in seqs], tokenizer.pad_id).items()}
        diff = (sequence_logprobs(policy, batch) - sequence_logprobs(reference, batch)) * batch["action_mask"]
        out["kl"] = float(diff.sum(-1).mean())
    out["completion_tokens"] = sum(len(s.token_ids) for s in seqs) / len(seqs)
    return out


def check_schedule(config: RLConfig, train: TrainConfig) -> int:
    """Optimizer steps per round; refuses periodic checkpoints that would fall inside a round (see above)."""
    steps = config.epochs * config.minibatches
    if train.checkpoint_every and train.checkpoint_every % steps:
        raise TinyLMError(
            f"train.checkpoint_every={train.checkpoint_every} must be a multiple of epochs × minibatches = "
            f"{steps}, so that periodic checkpoints fall between rollout rounds"
        )
    return steps


class Rounds:
    """Micro-batch index -> the rows of the current round's rollout that it trains on.

    `make(round, seed)` samples and scores the rollout of a round on this process: a dict of tensors whose
    first dimension is `rollout_size`. Step s of round r = s // K takes, in pass e, minibatch m of a
    permutation drawn from (seed, r, e), and cuts it into `grad_accum` micro-batches.
    """

    def __init__(
        self,
        out_dir: str | Path,
        config: RLConfig,
        train: TrainConfig,
        rank: int,
        world_size: int,
        make: Callable[[int, int], dict[str, torch.Tensor]],
    ) -> None:
        self.config, self.train, self.rank, self.make = config, train, rank, make
        self.steps_per_round = check_schedule(config, train)
        self.micro_per_step = train.grad_accum * world_size
        self.rollout_size = train.batch_size * train.grad_accum * config.minibatches
        self.path = Path(out_dir) / f"rollout-rank{rank}.pt"
        self.round: int | None = None
        self.rollout: dict[str, torch.Tensor] = {}

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        step, slot = divmod(index, self.micro_per_step)
        micro = slot % self.train.grad_accum
        rnd, k = divmod(step, self.steps_per_round)
        epoch, minibatch = divmod(k, self.config.minibatches)
        rollout = self._rollout(rnd, first_step=k == 0)
        perm = torch.randperm(
            self.rollout_size,
            generator=torch.Generator().manual_seed(derive_seed(self.train.seed, rnd, epoch, self.rank)),
        )
        start = minibatch * self.train.batch_size * self.train.grad_accum + micro * self.train.batch_size
        rows = perm[start : start + self.train.batch_size]
        return {name: t[rows] for name, t in rollout.items()}

    def _rollout(self, rnd: int, first_step: bool) -> dict[str, torch.Tensor]:
        if self.round == rnd:
            return self.rollout
        if first_step:
            self.rollout = self.make(rnd, derive_seed(self.train.seed, "rollout", rnd, self.rank))
            with atomic_file(self.path, "wb") as f:
                torch.save({"round": rnd, "tensors": self.rollout}, f)
        else:
            saved = torch.load(self.path, weights_only=True) if self.path.is_file() else {"round": None}
            if saved["round"] != rnd:
                raise TinyLMError(
                    f"resuming inside rollout round {rnd} needs {self.path} of that round (found round "
                    f"{saved['round']}); delete the newest checkpoint to resume from an earlier round"
                )
            self.rollout = saved["tensors"]
        self.round = rnd
        return self.rollout


@dataclass
class RLRun:
    """Everything a PPO or GRPO run sets up the same way: the policy and its frozen reference (both loaded
    from the starting checkpoint), the tokenizer, train and held-out prompts, the run directory, the device;
    and `train()`, which runs the rounds through the shared loop and writes model/ and results.json."""

    out_dir: Path
    policy: TinyLM
    reference: TinyLM
    tokenizer: Tokenizer
    tokenizer_dir: Path
    prompts: list[RLPrompt]
    eval_prompts: list[RLPrompt]
    reward: str | None
    config: RLConfig
    train_config: TrainConfig
    run_config: dict[str, Any]
    dist: Dist
    device: torch.device

    @classmethod
    def start(
        cls,
        data: str,
        model: str,
        out: str,
        reward: str | None,
        eval_data: str | None,
        config: RLConfig,
        train: TrainConfig,
        overwrite: bool,
        trained_on_reward: bool = True,
        **settings: Any,
    ) -> RLRun:
        """Load, check and record a run; `trained_on_reward` False means `reward` only measures (so
        training prompts need not carry its field). `settings` join the recorded run config."""
        config.validate()
        check_schedule(config, train)
        policy, tokenizer_dir = load_checkpoint(model)
        tok = Tokenizer.load(tokenizer_dir)
        context = policy.config.max_seq_len
        train_file, eval_file = split_files(data, eval_data)
        prompts = load_rl_prompts(
            train_file, tok, context, config.max_new_tokens, reward if trained_on_reward else None
        )
        eval_prompts = []
        if eval_file is not None and reward is not None and config.eval_prompts:
            eval_prompts = load_rl_prompts(eval_file, tok, context, config.max_new_tokens, reward)[
                : config.eval_prompts
            ]
        run_config = {
            "data": str(train_file),
            "eval_data": str(eval_file) if eval_file else None,
            "model": str(model),
            "reward": reward,
            **settings,
            "config": config,
            "train": train,
        }
        d, device, out_dir = start_run(out, run_config, train, overwrite)
        seed_everything(train.seed)
        reference = load_model(model, device=str(device)).requires_grad_(False)
        return cls(
            out_dir,
            policy.to(device),
            reference,
            tok,
            tokenizer_dir,
            prompts,
            eval_prompts,
            reward,
            config,
            train,
            run_config,
            d,
            device,
        )

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def rollout_size(self) -> int:
        """Completions each process samples per round."""
        return self.train_config.batch_size * self.train_config.grad_accum * self.config.minibatches

    def choose_prompts(self, rng: random.Random, n: int) -> list[RLPrompt]:
        """`n` training prompts, distinct while the file has enough."""
        if n <= len(self.prompts):
            return rng.sample(self.prompts, n)
        return rng.choices(self.prompts, k=n)

    def evaluate(self, policy: TinyLM, n: int | None = None) -> dict[str, float]:
        """Held-out verifiable scores and KL to the reference (a fixed seed, so evaluations compare)."""
        return evaluate_policy(
            policy,
            self.tokenizer,
            self.eval_prompts[:n],
            self.reward,
            self.config.max_new_tokens,
            seed=self.train_config.seed,
            reference=self.reference,
        )

    def train(
        self,
        module: nn.Module,
        make: Callable[[int, int], dict[str, torch.Tensor]],
        loss: Callable[[nn.Module, Any], LossOutput],
        heads: dict[str, ScalarHead] | None = None,
        desc: str = "rl",
    ) -> dict[str, Any]:
        """Train `module` (the policy, or the policy with heads) round after round; save the policy (and
        `heads` beside it) to <out>/model and the held-out evaluation to results.json."""
        rounds = Rounds(
            self.out_dir, self.config, self.train_config, self.dist.rank, self.dist.world_size, make
        )
        policy = self.policy
        task = Task(
            batch=rounds.batch,
            loss=loss,
            evaluate=(lambda m: self.evaluate(policy)) if self.eval_prompts else None,
        )
        result = train_loop(module, task, self.train_config, self.out_dir, self.run_config, desc=desc)
        if result.interrupted:
            raise KeyboardInterrupt
        if not self.is_main:
            return {"step": result.step}
        policy.eval()
        with atomic_dir(self.out_dir / "model") as tmp:
            save_checkpoint(policy, tmp, self.tokenizer_dir)
            for name, head in (heads or {}).items():
                save_head(head, tmp, name)
        results: dict[str, Any] = {"step": result.step, "train_seconds": result.elapsed}
        if self.eval_prompts:
            results.update({f"heldout_{k}": v for k, v in self.evaluate(policy).items()})
            # The frozen reference is the starting policy: same prompts and seed give the "before" number.
            start = self.evaluate(self.reference)
            results.update({f"start_heldout_{k}": v for k, v in start.items() if k != "kl"})
            print(
                f"{desc}: held-out "
                + ", ".join(f"{k} {v:.4f}" for k, v in results.items() if "heldout_" in k)
            )
        write_json(self.out_dir / "results.json", results)
        return results


def eval_reward(
    model: str,
    data: str,
    reward: str = "poem",
    reference: str | None = None,
    n: int = 200,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Score a model's sampled answers to prompts with a verifiable reward (and its KL to a reference model).

    Args:
        model: Checkpoint directory of the policy.
        data: Prompt JSONL whose rows carry `form` (poem) or `answer` (arithmetic), e.g. a test.jsonl.
        reward: poem (prints form-and-rhyme score and exact-form rate) or arithmetic (prints accuracy).
        reference: Checkpoint to measure KL(model‖reference) against, e.g. the model RL started from.
        n: Score the first this many prompts (one sample each).
        max_new_tokens: Longest answer in tokens.
        temperature: Sampling temperature (KL is meaningful at 1, the policy's own distribution).
        seed: Sampling seed (row i uses seed + i).
    """
    policy, tokenizer_dir = load_checkpoint(model)
    tok = Tokenizer.load(tokenizer_dir)
    prompts = load_rl_prompts(data, tok, policy.config.max_seq_len, max_new_tokens, reward)[:n]
    ref = load_model(reference) if reference else None
    if ref is not None and Tokenizer.load(reference).hash != tok.hash:
        raise TinyLMError(
            f"reference {reference} uses a different tokenizer than {model}; KL needs the same one"
        )
    result = evaluate_policy(policy, tok, prompts, reward, max_new_tokens, temperature, seed, ref)
    result["prompts"] = len(prompts)
    print(" ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return result


def summarize(out: str) -> str:
    """Markdown for a pipeline report: steps, time and the held-out verifiable scores of a PPO / GRPO run."""
    r = read_json(Path(out) / "results.json")
    held = ", ".join(
        f"{k.removeprefix('heldout_')} {v:.4f}" for k, v in r.items() if k.startswith("heldout_")
    )
    start = ", ".join(
        f"{k.removeprefix('start_heldout_')} {v:.4f}" for k, v in r.items() if k.startswith("start_heldout_")
    )
    return (
        f"{r['step']:,} steps in {r['train_seconds']:.0f} s"
        + (f"; held-out {held}" if held else "")
        + (f"; the starting model, same prompts and seed: {start}" if start else "")
    )
