"""`tinylm eval run TASK`: every task evaluated end to end, label log-likelihoods on the engine's cache, options."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tinylm.cli import main
from tinylm.data.chat import encode_conversation, encode_prompt
from tinylm.errors import TinyLMError
from tinylm.eval.run import eval_run, label_answers
from tinylm.infer.scoring import continuation_logprobs
from tinylm.models import load_model, save_model
from tinylm.models.lora import LoraConfig, apply_lora, lora_modules, merged_model, save_adapters
from tinylm.tasks import TASKS, Task, get_task
from tinylm.tasks.make import make_splits
from tinylm.tokenizer import Tokenizer

TINY = ["--n", "2", "--sampling.max_new_tokens", "4"]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint


def labelled(jsonl, tmp_path, pairs=(("good", "positive"), ("bad", "negative"), ("fine", "positive"))):
    rows = [
        {"messages": [{"role": "user", "content": x}, {"role": "assistant", "content": y}], "label": y}
        for x, y in pairs
    ]
    return jsonl(tmp_path / "labels.jsonl", rows)


def poem_rows(jsonl, tmp_path, titles, forms=("五言绝句",)):
    rows = [
        {"messages": [{"role": "user", "content": f"写一首{f}，题为《{t}》。"}], "form": f, "title": t}
        for t in titles
        for f in forms
    ]
    return jsonl(tmp_path / "poems.jsonl", rows)


def run(args, out):
    assert main(["eval", "run", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_continuations_of_a_shared_prefix_score_as_full_forward_passes(ckpt):
    model, tok = load_model(ckpt), Tokenizer.load(ckpt)
    prompt = [{"role": "user", "content": "To be, or not to be?"}]
    labels = ["positive", "negative", "the question"]
    prefix = encode_prompt(prompt, tok)
    continuations = [*label_answers(tok, prefix, prompt, labels), [7]]  # and one of a single token
    expected = []
    for label in labels:
        ids, mask = encode_conversation([*prompt, {"role": "assistant", "content": label}], tok)
        with torch.no_grad():
            logp = model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)
        expected.append(
            sum(float(logp[i, t]) for i, (t, m) in enumerate(zip(ids[1:], mask[1:], strict=True)) if m)
        )
    with torch.no_grad():
        expected.append(float(model(torch.tensor([prefix]))[0, -1].log_softmax(-1)[7]))
    assert len({len(c) for c in continuations}) > 1  # right-padding is exercised
    assert continuation_logprobs(model, prefix, continuations) == pytest.approx(expected, abs=1e-4)


def task_rows(task: str, jsonl, tmp_path):
    """A few rows of `task` as `tinylm data make` writes them (sentiment from a tiny review file)."""
    source = {"poems": "tang300", "preferences": "tang300", "kjv": None, "arithmetic": None}.get(task)
    if task == "sentiment-zh":
        reviews = [{"text": f"这家店第{i}次{'很好' if i % 2 else '很差'}", "label": "pos" if i % 2 else "neg"}
                   for i in range(40)]  # fmt: skip
        source = str(jsonl(tmp_path / "reviews.jsonl", reviews))
    if task == "sentiment-en":
        tweets = [
            {"text": f"tweet {i}", "sentiment": ["positive", "negative", "neutral"][i % 3]} for i in range(40)
        ]
        source = str(jsonl(tmp_path / "tweets.jsonl", tweets))
    splits = make_splits(task, source, limit=30)
    return jsonl(tmp_path / "test.jsonl", (splits["test"] + splits["train"])[:4])


@pytest.mark.parametrize("task", list(TASKS))
def test_every_registered_task_evaluates_end_to_end(task, ckpt, tmp_path, jsonl):
    data, spec = task_rows(task, jsonl, tmp_path), get_task(task)
    result = run([task, "--model", str(ckpt), "--data", str(data), *TINY], tmp_path / "r.json")
    assert result["task"] == task and result["prompts"] == 2 and result["scored_by"] == spec.reward
    assert 0 <= result["reward"] <= 1 and set(spec.metrics) <= set(result)
    assert len(result["samples"]) == 2 and result["sampling"]["seed"] == 0
    if spec.labels:
        assert sum(result["predicted"].values()) == 2
        loglik = run([task, "--model", str(ckpt), "--data", str(data), "--n", "2", "--method", "loglik"],
                     tmp_path / "l.json")  # fmt: skip
        labels = {json.loads(line)["label"] for line in data.read_text().splitlines()}
        assert set(loglik["predicted"]) <= labels and sum(loglik["expected"].values()) == 2


def test_generation_reproduces_and_kl_is_measured_against_a_reference(ckpt, tmp_path, jsonl):
    data = poem_rows(jsonl, tmp_path, "甲乙")
    args = ["poems", "--model", str(ckpt), "--data", str(data), *TINY]
    same = run([*args, "--reference", str(ckpt)], tmp_path / "a.json")
    assert same["kl"] == pytest.approx(0.0, abs=1e-5) and "kl" not in run(args, tmp_path / "b.json")
    other = load_model(ckpt)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    save_model(other, tmp_path / "other", ckpt)
    moved = run([*args, "--reference", str(tmp_path / "other")], tmp_path / "c.json")
    assert moved["kl"] != pytest.approx(0.0, abs=1e-3)
    assert moved["samples"] == same["samples"]  # the reference changes the KL, never the answers


def test_loglik_picks_the_most_likely_label(ckpt, tmp_path, jsonl):
    # With a zero LM head every token is equally likely, so the label of fewest tokens always wins.
    flat = load_model(ckpt)
    with torch.no_grad():
        flat.lm_head.weight.zero_()
    save_model(flat, tmp_path / "flat", ckpt)
    data = labelled(jsonl, tmp_path, [("a", "yes"), ("b", "certainly not, no"), ("c", "yes"), ("d", "yes")])
    args = ["sentiment-en", "--model", str(tmp_path / "flat"), "--data", str(data), "--method", "loglik"]
    result = run(args, tmp_path / "r.json")
    assert result["predicted"] == {"yes": 4} and result["reward"] == 0.75 and result["prompts"] == 4
    assert result["expected"] == {"yes": 3, "certainly not, no": 1}


def test_a_python_reward_and_task(ckpt, tmp_path, jsonl):
    def length(completions, **_):
        return [float(len(c)) for c in completions]

    data = jsonl(tmp_path / "a.jsonl", [{"prompt": f"{i} + 1?", "answer": i + 1} for i in range(2)])
    result = eval_run("arithmetic", model=str(ckpt), data=str(data), reward=length, n=2)
    assert result["scored_by"] == "length"
    assert result["reward"] == sum(len(s["answer"]) for s in result["samples"]) / 2 > 0

    def rows(source, rng: random.Random):  # no data given: the held-out split of the task's own rows
        for i in range(200):
            yield str(i), {"prompt": f"say {i}", "n": i}

    mine = Task("mine", "say a number", rows)
    with pytest.raises(TinyLMError, match="task mine has no reward"):
        eval_run(mine, model=str(ckpt))
    result = eval_run(mine, model=str(ckpt), reward=length, n=3, sampling=None)
    assert result["prompts"] == 3 and result["data"] == "the held-out rows of task mine"


def test_where_keeps_matching_rows_and_each_prompt_is_asked_once(ckpt, tmp_path, jsonl):
    data = poem_rows(jsonl, tmp_path, "甲乙甲丙", forms=("五言绝句", "七言绝句"))
    args = ["poems", "--model", str(ckpt), "--data", str(data), "--sampling.max_new_tokens", "4"]
    result = run([*args, "--where", '{"form": "五言绝句"}'], tmp_path / "r.json")
    assert result["prompts"] == 3 and result["where"] == {"form": "五言绝句"}  # 甲 once
    assert all("五言绝句" in s["prompt"] for s in result["samples"])
    assert run(args, tmp_path / "all.json")["prompts"] == 6


def test_an_adapter_is_applied_before_scoring(ckpt, tmp_path, jsonl):
    model = load_model(ckpt)
    apply_lora(model, LoraConfig(rank=4, targets=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.normal_(0, 0.5)
    save_adapters(model, tmp_path / "adapter")
    save_model(merged_model(model), tmp_path / "merged", ckpt)
    data = str(labelled(jsonl, tmp_path))
    base = ["sentiment-en", "--data", data, "--sampling.max_new_tokens", "4"]
    adapted = run([*base, "--model", str(ckpt), "--adapter", str(tmp_path / "adapter")], tmp_path / "a.json")
    merged = run([*base, "--model", str(tmp_path / "merged")], tmp_path / "m.json")
    plain = run([*base, "--model", str(ckpt)], tmp_path / "p.json")
    assert adapted["samples"] == merged["samples"] != plain["samples"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "unknown task 'nope'"),
        (["poems", "--method", "loglik"], "task poems has no labels to choose among"),
        (["sentiment-zh"], "task sentiment-zh has no embedded corpus; pass --data"),
        (["arithmetic", "--data", "{bad}"], "has no 'answer' field, which the arithmetic reward needs"),
        (["poems", "--data", "{poems}", "--where", '{"level": 1}'], "no row of"),
        (["poems", "--data", "{poems}", "--where", '{"form": "七言绝句"}'], 'has {"form": "七言绝句"}'),
        (
            ["sentiment-en", "--data", "{labels}", "--method", "loglik", "--reference", "{ckpt}"],
            "KL is estimated",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, message, ckpt, tmp_path, capsys, jsonl):
    bad = jsonl(tmp_path / "bad.jsonl", [{"prompt": "1 + 1?", "answer": 2}, {"prompt": "2 + 2?"}])
    files = {
        "bad": bad,
        "poems": poem_rows(jsonl, tmp_path, "甲"),
        "labels": labelled(jsonl, tmp_path),
        "ckpt": ckpt,
    }
    args = [a.format(**files) if a.startswith("{") and a.strip("{}") in files else a for a in args]
    assert main(["eval", "run", *args, "--model", str(ckpt), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
