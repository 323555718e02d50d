"""`tinylm eval task`: label log-likelihoods with a shared prompt, and the poem and sentiment scores."""

from __future__ import annotations

import json

import pytest
import torch
from infer_fixtures import make_checkpoint

from tinylm.cli import main
from tinylm.data.chat import encode_conversation
from tinylm.eval.tasks import label_logliks
from tinylm.models import load_model
from tinylm.tokenizer import Tokenizer


def test_shared_prompt_logliks_equal_a_full_forward_pass(tmp_path):
    tok_dir = make_checkpoint(tmp_path)
    model = load_model(tok_dir)
    tok = Tokenizer.load(tok_dir)
    prompt = [{"role": "user", "content": "To be, or not to be?"}]
    labels = ["positive", "negative", "the question"]
    expected = []
    for label in labels:
        ids, mask = encode_conversation([*prompt, {"role": "assistant", "content": label}], tok)
        with torch.no_grad():
            logp = model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)
        expected.append(
            sum(float(logp[i, t]) for i, (t, m) in enumerate(zip(ids[1:], mask[1:], strict=True)) if m)
        )
    got = label_logliks(model, tok, prompt, labels)
    assert got == pytest.approx(expected, abs=1e-4)


def test_eval_task_cli_scores_poems_and_labels(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path)
    poems = tmp_path / "poems.jsonl"
    rows = [
        {
            "messages": [{"role": "user", "content": f"写一首五言绝句，题为《{t}》。"}],
            "form": "五言绝句",
            "title": t,
        }
        for t in ("甲", "乙", "甲")
    ]
    poems.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert main(["eval", "task", "--model", str(ckpt), "--data", str(poems),
                 "--max_new_tokens", "8", "--out", str(tmp_path / "p.json")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["n"] == 2 and result["exact_form"] == 0  # distinct titles; 8 tokens cannot make a poem

    labelled = tmp_path / "labels.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": x}, {"role": "assistant", "content": y}], "label": y}
        for x, y in (("good", "positive"), ("bad", "negative"), ("fine", "positive"))
    ]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for method in ("loglik", "generate"):
        out = tmp_path / f"{method}.json"
        assert main(["eval", "task", "--model", str(ckpt), "--data", str(labelled), "--task", "sentiment",
                     "--method", method, "--max_new_tokens", "3", "--out", str(out)]) == 0  # fmt: skip
        result = json.loads(out.read_text())
        assert result["n"] == 3 and result["reference"] == {"positive": 2, "negative": 1}
        assert sum(result["predicted"].values()) == 3
        if method == "loglik":  # always one of the labels
            assert set(result["predicted"]) <= {"positive", "negative"}
