"""A model's sampled answers to prompts, scored by a task's reward and metrics, with KL to a reference.

One function serves RL's held-out evaluation (before and after training, same prompts and seed) and
`tinylm eval reward`. Every score is a reward (`tinylm.tasks.rewards`), so a reader can recompute it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.prompts import EncodedPrompt, pack
from ..infer.engine import sample
from ..infer.sampling import SamplingParams
from ..infer.scoring import sequence_logprobs
from ..tasks.rewards import Reward, check_rows, reward_name, score


@torch.no_grad()
def evaluate_answers(
    model: nn.Module,
    tokenizer,
    prompts: list[EncodedPrompt],
    reward: str | Reward,
    params: SamplingParams,
    metrics: tuple[str | Reward, ...] = (),
    reference: nn.Module | None = None,
) -> dict[str, float]:
    """Mean reward (and metrics) of one sampled answer per prompt (row i uses params.seed + i).

    With a `reference`, also "kl": the mean over answers of Σ_t log π/π_ref, a Monte Carlo estimate of the
    sequence-level KL(π‖π_ref) (meaningful at temperature 1, the policy's own distribution).
    """
    ids = [p.ids for p in prompts]
    seqs = sample(model, tokenizer, ids, params)
    texts, rows = [s.text for s in seqs], [p.fields for p in prompts]
    out = {"reward": sum(score(reward, texts, rows)) / len(prompts)}
    for metric in metrics:
        out[reward_name(metric)] = sum(score(metric, texts, rows)) / len(prompts)
    if reference is not None:
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in pack(ids, [s.token_ids for s in seqs], tokenizer.pad_id).items()}
        diff = (sequence_logprobs(model, batch) - sequence_logprobs(reference, batch)) * batch["action_mask"]
        out["kl"] = float(diff.sum(-1).mean())
    out["completion_tokens"] = sum(len(s.token_ids) for s in seqs) / len(seqs)
    return out


def eval_reward(
    model: str,
    data: str,
    reward: str | Reward = "poem",
    reference: str | None = None,
    n: int = 200,
    sampling: SamplingParams | None = None,
) -> dict[str, float]:
    """Score a model's sampled answers to prompts with a reward (and its KL to a reference model).

    Args:
        model: Model directory of the policy.
        data: Prompt JSONL whose rows carry what the reward reads (`form` for poem, `answer` for arithmetic).
        reward: A registered reward (poem, arithmetic, label, exact_form); the metrics of the tasks it
            scores are reported too (exact_form for poem).
        reference: Model to measure KL(model‖reference) against, e.g. the model RL started from.
        n: Score the first this many prompts (one sample each).
        sampling: How answers are sampled (KL is meaningful at temperature 1; seed 0 when none is given).
    """
    from dataclasses import replace

    from ..data.prompts import encode_prompts
    from ..errors import TinyLMError
    from ..models import load_model
    from ..tasks import metrics_for
    from ..tokenizer import Tokenizer

    params = sampling or SamplingParams()
    params = replace(params, seed=0 if params.seed is None else params.seed)
    tok, policy = Tokenizer.load(model), load_model(model)
    prompts = check_rows(
        reward, encode_prompts(data, tok, policy.config.max_seq_len, params.max_new_tokens)[:n]
    )
    ref = load_model(reference) if reference else None
    if ref is not None and Tokenizer.load(reference).hash != tok.hash:
        raise TinyLMError(
            f"reference {reference} uses a different tokenizer than {model}; KL needs the same one"
        )
    result = evaluate_answers(policy, tok, prompts, reward, params, metrics_for(reward), ref)
    result["prompts"] = len(prompts)
    print(" ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return result
