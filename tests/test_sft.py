"""`tinylm sft` end to end in every fine-tuning mode on a tiny model, its loss mask, and the inputs it refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tinylm.cli import main
from tinylm.data.batching import LengthBatches
from tinylm.data.chat import IGNORE, collate, encode_sft
from tinylm.models import Backbone, ModelConfig, build_model, load_model, save_model
from tinylm.models.lora import load_adapters
from tinylm.tokenizer import Tokenizer
from tinylm.train.objectives.lm import sft_loss

POEMS = [
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
]
QUICK = [
    "--train.max_steps",
    "3",
    "--train.batch_size",
    "4",
    "--train.warmup_steps",
    "1",
    "--train.lr",
    "1e-3",
]
QUICK += ["--train.eval_batches", "2", "--train.device", "cpu", "--train.checkpoint_every", "0"]


def conversation(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "你是诗人。"},
            {"role": "user", "content": f"写一首五言绝句，题为《题{i}》。"},
            {"role": "assistant", "content": POEMS[i % 2]},
        ]
    }


@pytest.fixture(scope="module")
def base(tiny_tokenizer_dir, tmp_path_factory, jsonl):
    """A random 2-block model (tied embeddings) with the tiny tokenizer, and a task directory for it."""
    root = tmp_path_factory.mktemp("sft")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=1024, d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=128)
    save_model(build_model(config), root / "base", tiny_tokenizer_dir)
    (root / "data").mkdir()
    jsonl(root / "data" / "train.jsonl", [conversation(i) for i in range(12)])
    jsonl(root / "data" / "test.jsonl", [conversation(i) for i in range(12, 16)])
    return root


def run_sft(base, out, *extra: str) -> int:
    return main(
        [
            "sft",
            "--model",
            str(base / "base"),
            "--data",
            str(base / "data"),
            "--out",
            str(out),
            *QUICK,
            *extra,
        ]
    )


def block(model: Backbone, i: int) -> int:
    return sum(p.numel() for p in model.blocks[i].parameters())


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("full", []),
        ("partial", ["--last_blocks", "1"]),
        ("frozen", ["--freeze_blocks", "1"]),
        ("lora", ["--lora.rank", "2", "--lora.targets", '["q_proj", "v_proj"]']),
    ],
)
def test_every_mode_trains_end_to_end_with_the_right_trainable_count(base, tmp_path, capsys, mode, extra):
    out = tmp_path / mode
    assert run_sft(base, out, "--mode", mode, *extra) == 0
    results = json.loads((out / "results.json").read_text())
    m = load_model(base / "base")
    d, embed = m.config.d_model, m.embed.weight.numel()
    expected = {
        "full": m.num_params(),
        "partial": block(m, 1) + d,  # last block and final norm; the tied head is the input embedding: frozen
        "frozen": m.num_params() - embed - block(m, 0),
        "lora": 2 * 2 * 2 * (d + d),  # 2 layers x (q, v) x rank 2 x (in + out)
    }[mode]
    assert results["trainable_params"] == expected
    total = m.num_params() + (expected if mode == "lora" else 0)  # adapters count in the total, as in PEFT
    assert f"{expected:,} of {total:,} parameters trainable" in capsys.readouterr().out
    assert results["step"] == 3 and results["peak_memory_mb"] > 0
    assert math.isfinite(results["val_loss_before"]) and math.isfinite(results["val_loss_after"])
    assert results["train_examples"] == {
        "kept": 12,
        "truncated": 0,
        "dropped_too_long": 0,
        "dropped_identical": 0,
    }
    for name in ("config.yaml", "metrics.jsonl", "README.md"):
        assert (out / name).is_file()
    tuned = load_model(out / "model")
    changed = {n for n, p in tuned.named_parameters() if not torch.equal(p, dict(m.named_parameters())[n])}
    if mode == "partial":
        assert changed and not any(n.startswith(("blocks.0.", "embed")) for n in changed)
    if mode == "frozen":
        assert changed and not any(n.startswith(("blocks.0.", "embed")) for n in changed)
    if mode == "lora":  # the adapters on the base equal the merged model
        assert changed == {f"blocks.{i}.attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
        load_adapters(m, out / "adapter")
        ids = torch.randint(0, 1024, (1, 10))
        with torch.no_grad():
            torch.testing.assert_close(m.eval()(ids), tuned(ids), atol=1e-5, rtol=0)


def test_loss_covers_exactly_the_assistant_tokens(base, tiny_tokenizer_dir):
    tok = Tokenizer.load(tiny_tokenizer_dir)
    two_turns = {
        "messages": [
            {"role": "user", "content": "甲"},
            {"role": "assistant", "content": POEMS[0]},
            {"role": "user", "content": "乙"},
            {"role": "assistant", "content": POEMS[1]},
        ]
    }
    examples, counts = encode_sft([two_turns["messages"]], tok, 128)
    assert counts.truncated == 0
    batch = LengthBatches(
        [len(e.input_ids) for e in examples],
        1,
        0,
        lambda rows: collate([examples[i] for i in rows], tok.pad_id),
    )(0)
    labels = batch["labels"][0]
    assert tok.decode(labels[labels != IGNORE].tolist()) == "<|im_end|>".join(POEMS) + "<|im_end|>"

    # The gradient reaches the logits at labelled positions only.
    model = load_model(base / "base")
    logits = model(batch["input_ids"]).detach().requires_grad_(True)
    sft_loss(lambda ids, keep, prefix: logits[keep], batch).backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, batch["labels"] != IGNORE)


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"messages": [{"role": "robot", "content": "hi"}]}], [], "unknown role 'robot'"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], [], "no assistant turn"),
        ([conversation(0)], ["--mode", "lora", "--lora.targets", '["qkv"]'], "LoRA target 'qkv' matches no"),
        ([conversation(0)], ["--mode", "partial", "--last_blocks", "5"], "last_blocks must be in"),
    ],
    ids=["unknown-role", "no-assistant", "lora-target", "partial-too-deep"],
)
def test_bad_input_exits_2_with_a_clear_message(base, tmp_path, capsys, rows, extra, message, jsonl):
    data = str(jsonl(tmp_path / "bad.jsonl", rows))
    out = tmp_path / "out"
    args = ["sft", "--model", str(base / "base"), "--data", data, "--out", str(out), *QUICK, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "model").exists()


def test_head_only_at_labelled_positions_gives_the_full_forward_loss_and_gradients(base, tiny_tokenizer_dir):
    """sft_loss runs the head only where a label is; computing it everywhere and selecting gives the same."""
    tok = Tokenizer.load(tiny_tokenizer_dir)
    examples, _ = encode_sft([conversation(i)["messages"] for i in range(3)], tok, 128)
    batch = LengthBatches(
        [len(e.input_ids) for e in examples],
        3,
        0,
        lambda rows: collate([examples[i] for i in rows], tok.pad_id),
    )(0)
    model = load_model(base / "base")

    def grads(call):
        model.zero_grad()
        loss = sft_loss(call, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fast_loss, fast = grads(model)
    full_loss, full = grads(lambda ids, keep, prefix: model(ids)[keep])  # the head at every position
    torch.testing.assert_close(fast_loss, full_loss, rtol=1e-6, atol=1e-6)
    for g, h in zip(fast, full, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-7)
    assert (batch["labels"] == IGNORE).any()  # the prompt positions really were skipped
