"""`tinylm eval run TASK`: a model's answers to a task's held-out prompts, scored by the task's reward.

One evaluation serves every task of `tinylm.tasks`. The prompts are the task's held-out rows (filtered by
`where` if given), each distinct conversation once, rendered exactly as SFT renders them. The answers are

- generate: one sampled by the engine per prompt (row i with seed + i, so a result reproduces), or
- loglik (tasks whose rows carry a label): the label that is most likely as the whole assistant answer
  (its tokens plus the end-of-turn token), so a model is never penalised for the format of its answer;

and they are scored by the task's reward (any reward callable from Python) and the task's metrics, with
KL to a reference model for sampled answers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from ..data.chat import Prompt, encode_conversation, encode_prompt, to_prompt
from ..data.jsonl import jsonl_rows
from ..data.prompts import EncodedPrompt, fit_prompts
from ..errors import TinyLMError
from ..infer.sampling import SamplingParams
from ..infer.scoring import continuation_logprobs
from ..io import to_plain, write_json
from ..models import Backbone, load_model
from ..models.lora import load_adapters, merge
from ..tasks import Task, get_task
from ..tasks.make import make_splits
from ..tasks.rewards import Reward, check_rows, reward_name
from ..tokenizer import Tokenizer
from .sampled import evaluate_answers, score_answers

SAMPLES = 3
"""Answers shown in the summary and kept in the result."""


def held_out_rows(task: Task, data: str | None) -> tuple[str, Iterator[tuple[str, dict[str, Any]]]]:
    """(name of the source, (where, row) pairs) of the held-out rows: DATA's test.jsonl, a JSONL file, or
    with no DATA the test split `tinylm data make TASK` writes by default (built in memory)."""
    if data is None:
        if task.needs_source:
            raise TinyLMError(
                f"task {task.name} has no embedded corpus; pass --data: the directory `tinylm data make "
                f"{task.name} --source ...` wrote, or a JSONL file"
            )
        rows = make_splits(task)["test"]
        name = f"the held-out rows of task {task.name}"
        return name, ((f"{task.name} held-out row {i}", r) for i, r in enumerate(rows, 1))
    path = Path(data)
    file = path / "test.jsonl" if path.is_dir() else path
    return str(file), jsonl_rows(file)


def matching(
    rows: Iterable[tuple[str, dict[str, Any]]], where: dict[str, Any] | None, source: str
) -> list[tuple[str, Prompt]]:
    """The prompts of the rows whose fields equal every value of `where`."""
    prompts = [(w, to_prompt(row, w)) for w, row in rows]
    if not prompts:
        raise TinyLMError(f"{source} holds no rows")
    if not where:
        return prompts
    if not isinstance(where, dict):
        raise TinyLMError(f"where must map row fields to values, e.g. {{'form': '五言绝句'}}; got {where!r}")
    for key in where:
        if not any(key in p.fields for _, p in prompts):
            raise TinyLMError(f"where: no row of {source} has a field {key!r}")
    kept = [(w, p) for w, p in prompts if all(p.fields.get(k) == v for k, v in where.items())]
    if not kept:
        raise TinyLMError(f"where: no row of {source} has {json.dumps(where, ensure_ascii=False)}")
    return kept


def distinct(prompts: Iterable[tuple[str, Prompt]]) -> Iterator[tuple[str, Prompt]]:
    """Each conversation once (the first row that asks it): a repeated prompt would only weigh its answer twice."""
    seen: set[str] = set()
    for where, p in prompts:
        key = json.dumps(p.messages, ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            yield where, p


def label_values(prompts: list[tuple[str, Prompt]], field: str) -> list[str]:
    """The distinct values of the label `field`, which every row must carry."""
    for where, p in prompts:
        if field not in p.fields:
            raise TinyLMError(f"{where} has no {field!r} field, which method loglik chooses among")
    labels = sorted({str(p.fields[field]) for _, p in prompts})
    if len(labels) < 2:
        raise TinyLMError(f"method loglik needs at least two labels to choose among; the rows have {labels}")
    return labels


def label_answers(
    tokenizer, prompt_ids: list[int], messages: list[dict], labels: list[str]
) -> list[list[int]]:
    """The tokens that follow the prompt when each label is the whole assistant answer (content and
    end-of-turn), as SFT learns them."""
    out = []
    for label in labels:
        ids, mask = encode_conversation([*messages, {"role": "assistant", "content": label}], tokenizer)
        end = len(mask) - mask[::-1].index(True)
        if ids[: len(prompt_ids)] != prompt_ids or not all(mask[len(prompt_ids) : end]):
            raise TinyLMError(
                "the chat template renders an answer unlike its generation prompt; use method generate"
            )
        out.append(ids[len(prompt_ids) : end])
    return out


def most_likely_labels(
    model: Backbone, tokenizer, prompts: list[EncodedPrompt], labels: list[str]
) -> list[str]:
    """For each prompt, the label with the highest log-likelihood as the whole answer."""
    picks = []
    for p in tqdm(prompts, desc="scoring", unit="prompt", disable=None):
        scores = continuation_logprobs(model, p.ids, label_answers(tokenizer, p.ids, p.messages, labels))
        picks.append(labels[max(range(len(labels)), key=scores.__getitem__)])
    return picks


def _reference(reference: str | None, tokenizer: Tokenizer, model: str, device: str) -> Backbone | None:
    if reference is None:
        return None
    if Tokenizer.load(reference).hash != tokenizer.hash:
        raise TinyLMError(
            f"reference {reference} uses a different tokenizer than {model}; KL needs the same one"
        )
    return load_model(reference, device=device)


def _summary(result: dict[str, Any], means: dict[str, float]) -> None:
    """The result in a few lines: the means, how labels are spread, a few answers."""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
    print(f"{result['task']} ({result['method']}, {result['scored_by']} reward): {scores} "
          f"over {result['prompts']} prompts of {result['data']}")  # fmt: skip
    if "predicted" in result:
        print(f"  predicted {result['predicted']}, expected {result['expected']}")
    for s in result["samples"]:
        prompt = s["prompt"] if len(s["prompt"]) <= 60 else "…" + s["prompt"][-59:]  # the asked item ends it
        print(f"  [{s['reward']:.3f}] {prompt!r} -> {s['answer'][:80]!r}")


def _check(
    task: Task, reward: str | Reward | None, method: str, reference: str | None, n: int
) -> str | Reward:
    """The reward to score with, after refusing options that do not fit together."""
    if reward is None:
        raise TinyLMError(f"task {task.name} has no reward; pass one (from Python, any callable)")
    if method not in ("generate", "loglik"):
        raise TinyLMError(f"method must be generate or loglik, got {method!r}")
    if method == "loglik" and task.labels is None:
        raise TinyLMError(f"task {task.name} has no labels to choose among, so method loglik does not apply")
    if method == "loglik" and reference is not None:
        raise TinyLMError("reference: KL is estimated on sampled answers; use it with method generate")
    if n < 1:
        raise TinyLMError(f"n must be at least 1, got {n}")
    return reward


def eval_run(
    task: str,
    *,
    model: str,
    data: str | None = None,
    n: int = 100,
    method: Literal["generate", "loglik"] = "generate",
    where: dict[str, Any] | None = None,
    sampling: SamplingParams | None = None,
    reward: str | Reward | None = None,
    reference: str | None = None,
    adapter: str | None = None,
    device: str = "cpu",
    out: str | None = None,
) -> dict[str, Any]:
    """Score a model on a task's held-out prompts: mean reward, the task's metrics, KL to a reference.

    Prints a summary line and a few answers; returns (and with OUT writes) the result as JSON.

    Args:
        task: A registered task (poems, preferences, sentiment-zh, sentiment-en, kjv, arithmetic); from
            Python also a `tinylm.tasks.Task`.
        model: Model directory (model + tokenizer).
        data: The task's held-out rows: a task directory from `tinylm data make` (its test.jsonl) or a JSONL
            file. Default: the test split that `tinylm data make TASK` writes with its defaults (tasks whose
            corpus is not embedded, such as sentiment, need it).
        n: Score the first this many distinct prompts (after `where`).
        method: generate (sample one answer per prompt) or loglik (tasks with labels: the most likely label
            as the whole answer, so with the label reward the mean reward is the accuracy).
        where: Keep only rows whose fields have these values, e.g. '{"form": "五言绝句"}' or '{"level": 1}'.
        sampling: How answers are generated (seed 0 when none is given, so results reproduce; KL is
            meaningful at temperature 1, the model's own distribution).
        reward: The reward that scores an answer; default the task's. A registered name, or from Python
            any callable `reward(completions, **row_fields) -> list[float]`.
        reference: Model to measure KL(model‖reference) against (method generate), e.g. the model RL or
            SFT started from.
        adapter: A LoRA adapter directory (PEFT layout) to apply to the model first.
        device: cpu or cuda.
        out: Also write the result here as JSON.
    """
    spec = get_task(task)
    reward = _check(spec, reward or spec.reward, method, reference, n)
    params = sampling or SamplingParams()
    params = replace(params, seed=0 if params.seed is None else params.seed).validate()
    source, rows = held_out_rows(spec, data)
    candidates = matching(rows, where, source)
    labels = label_values(candidates, spec.labels) if method == "loglik" else []
    tok, lm = Tokenizer.load(model), load_model(model, device=device)
    if adapter:
        load_adapters(lm, adapter)
        merge(lm)
    ref = _reference(reference, tok, model, device)
    room = params.max_new_tokens
    if labels:  # the longest answer, less its last token (which is predicted, never fed)
        messages = candidates[0][1].messages
        room = max(map(len, label_answers(tok, encode_prompt(messages, tok), messages, labels))) - 1
    prompts = fit_prompts(distinct(candidates), tok, lm.config.max_seq_len, room, source, limit=n)
    for r in (reward, *spec.metrics):
        check_rows(r, prompts)
    if labels:
        scored = score_answers(most_likely_labels(lm, tok, prompts, labels), prompts, reward, spec.metrics)
    else:
        scored = evaluate_answers(lm, tok, prompts, reward, params, spec.metrics, ref)

    result: dict[str, Any] = {"task": spec.name, "method": method, "scored_by": reward_name(reward),
                              "prompts": len(prompts), **scored.means}  # fmt: skip
    if spec.labels and all(spec.labels in p.fields for p in prompts):  # how answers and labels are spread
        expected = [str(p.fields[spec.labels]) for p in prompts]
        known = set(labels or expected)
        answers = [t.strip() if t.strip() in known else "(other)" for t in scored.texts]
        result["predicted"], result["expected"] = dict(Counter(answers)), dict(Counter(expected))
    result["samples"] = [
        {"prompt": p.messages[-1]["content"], "answer": t, "reward": r}
        for p, t, r in zip(prompts[:SAMPLES], scored.texts, scored.rewards, strict=False)
    ]
    result.update(model=model, adapter=adapter, reference=reference, data=source, where=where)
    if method == "generate":
        result["sampling"] = to_plain(params)
    _summary(result, scored.means)
    if out:
        write_json(out, result)
    return result
