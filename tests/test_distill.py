"""`tinylm distill`: a student learns a teacher's next-token distributions on token shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tinylm.cli import main
from tinylm.data.bpe import train_tokenizer
from tinylm.data.shards import prepare_shards
from tinylm.errors import TinyLMError
from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.models.layer_skip import first_layers
from tinylm.train.config import TrainConfig
from tinylm.train.objectives.distill import kl_per_token
from tinylm.train.stages.distill import distill

SHAPE = dict(d_model=32, n_head=2, d_ff=64, max_seq_len=64)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_shards_dir(tiny_corpus_dir, tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """Shards of 20k characters of Shakespeare on the tiny tokenizer: a val split of a few hundred tokens,
    which distillation scores twice (before and after) with both models."""
    root = tmp_path_factory.mktemp("distill_shards")
    text = (tiny_corpus_dir / "plays.txt").read_text(encoding="utf-8")[:20_000]
    (root / "plays.txt").write_text(text, encoding="utf-8")
    prepare_shards(str(root / "plays.txt"), str(tiny_tokenizer_dir), str(root / "shards"), workers=1)
    return root / "shards"


@pytest.fixture(scope="module")
def teacher(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """A random 3-block model on the tiny tokenizer, initialised wide so its distributions are far from uniform."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=1024, n_layer=3, init_std=0.1, **SHAPE)
    return save_model(build_model(config), tmp_path_factory.mktemp("teacher") / "model", tiny_tokenizer_dir)


def budget(**kw) -> TrainConfig:
    settings = dict(max_steps=4, batch_size=4, warmup_steps=0, eval_every=0, eval_batches=1, device="cpu")
    return TrainConfig(**{**settings, **kw})


def test_kl_to_the_teacher_falls(teacher, tiny_shards_dir, tmp_path):
    student = ModelConfig(n_layer=1, **SHAPE)
    train = budget(max_steps=30, lr=5e-3, eval_every=15, eval_batches=2)
    r = distill(
        str(teacher), str(tiny_shards_dir), str(tmp_path / "run"), model=student, train=train, context=32
    )
    assert r["val_kl_after"] < 0.85 * r["val_kl_before"]
    assert 0 <= r["val_agreement_after"] <= 1 and r["teacher_val_bpb"] > 0 and r["val_bpb_after"] > 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kls = [m["kl"] for m in metrics if "kl" in m]
    assert len(kls) == 30 and sum(kls[-5:]) < sum(kls[:5])
    assert any("eval/val_agreement" in m for m in metrics)
    saved = load_model(tmp_path / "run" / "model")
    assert saved.config.n_layer == 1 and saved.config.vocab_size == 1024
    assert (tmp_path / "run" / "model" / "tokenizer.json").read_bytes() == (
        teacher / "tokenizer.json"
    ).read_bytes()


def test_a_student_that_is_the_teacher_has_kl_0_and_agrees_everywhere(teacher, tiny_shards_dir, tmp_path):
    r = distill(str(teacher), str(tiny_shards_dir), str(tmp_path / "run"), student=str(teacher),
                train=budget(max_steps=1, lr=1e-12, weight_decay=0.0), context=32)  # fmt: skip
    assert r["val_kl_before"] == pytest.approx(0, abs=1e-7) and r["val_agreement_before"] == 1.0
    assert r["val_kl_after"] == pytest.approx(0, abs=1e-7) and r["val_agreement_after"] == 1.0
    assert r["val_bpb_before"] == pytest.approx(r["teacher_val_bpb"])


def test_the_loss_mixes_kl_at_a_temperature_with_cross_entropy():
    teacher, student = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    p, q = torch.softmax(teacher / 2, -1), torch.softmax(student / 2, -1)
    assert torch.allclose(kl_per_token(teacher, student, 2.0), (p * (p / q).log()).sum(-1), atol=1e-6)
    assert torch.all(kl_per_token(teacher, teacher) == 0)


def test_first_layers_copies_the_teachers_first_blocks(teacher):
    big = load_model(teacher)
    small = first_layers(big, 2)
    assert small.config.n_layer == 2 and len(small.blocks) == 2
    teacher_weights = big.state_dict()
    assert {k for k in teacher_weights if not k.startswith("blocks.2.")} == set(small.state_dict())
    assert all(torch.equal(v, teacher_weights[k]) for k, v in small.state_dict().items())
    x = torch.randint(0, 1024, (1, 9))
    assert torch.equal(first_layers(big, 3)(x), big(x))  # all the layers: the same model
    with pytest.raises(TinyLMError, match=r"N must be in \[1, 3\], got 4"):
        first_layers(big, 4)


def test_from_teacher_layers_starts_from_the_teachers_blocks(teacher, tiny_shards_dir, tmp_path):
    r = distill(str(teacher), str(tiny_shards_dir), str(tmp_path / "run"), from_teacher_layers=2,
                train=budget(max_steps=1, lr=1e-12, weight_decay=0.0), context=32)  # fmt: skip
    assert r["student_init"] == "the teacher's first 2 of 3 layers"
    big, small = load_model(teacher), load_model(tmp_path / "run" / "model")
    assert small.config.n_layer == 2
    assert all(torch.allclose(v, big.state_dict()[k], atol=1e-9) for k, v in small.state_dict().items())


def test_distill_resumes_exactly(teacher, tiny_shards_dir, tmp_path):
    train = budget(max_steps=4, checkpoint_every=2, eval_every=2)

    def run():
        return distill(str(teacher), str(tiny_shards_dir), str(tmp_path / "run"), alpha=0.3, temperature=2.0,
                       model=ModelConfig(n_layer=1, **SHAPE), train=train, context=32)  # fmt: skip

    first = run()
    straight = load_model(tmp_path / "run" / "model").state_dict()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")
    shutil.rmtree(tmp_path / "run" / "model")
    again = run()  # resumed from step 2
    assert again["step"] == 4 and again["val_kl_after"] == first["val_kl_after"]
    resumed = load_model(tmp_path / "run" / "model").state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())


def test_mismatches_are_refused(teacher, tiny_shards_dir, tiny_corpus_dir, tmp_path):
    tok = train_tokenizer(str(tiny_corpus_dir / "plays.txt"), str(tmp_path / "tok"), vocab_size=280)
    other = save_model(build_model(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, **SHAPE)),
                       tmp_path / "other", tmp_path / "tok")  # fmt: skip
    args = (str(teacher), str(tiny_shards_dir), str(tmp_path / "run"))
    with pytest.raises(
        TinyLMError, match=r"--student .*other has tokenizer vocab_size 280, the teacher 1024"
    ):
        distill(*args, student=str(other), train=budget())
    with pytest.raises(TinyLMError, match="tokenised with another tokenizer"):
        distill(str(other), str(tiny_shards_dir), str(tmp_path / "run"), train=budget())
    bert = save_model(build_model(ModelConfig(family="bert", vocab_size=1024, n_layer=1, **SHAPE)),
                      tmp_path / "bert", teacher)  # fmt: skip
    with pytest.raises(TinyLMError, match="needs a decoder"):
        distill(str(bert), str(tiny_shards_dir), str(tmp_path / "run"), train=budget())
    with pytest.raises(
        TinyLMError, match=r"--model\.family t5 is a t5 model; tinylm distill needs decoder-only"
    ):
        distill(*args, model=ModelConfig(family="t5", n_layer=1, **SHAPE), train=budget())
    with pytest.raises(TinyLMError, match="at most one of --student, --from_teacher_layers"):
        distill(*args, student=str(teacher), from_teacher_layers=1, train=budget())
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(TinyLMError, match="holds no tinylm config.yaml"):
        distill(*args, from_teacher_layers=1, train=budget())
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_cli_distills_a_layer_skip_draft_with_an_int4_teacher(teacher, tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(teacher), "--shards", str(tiny_shards_dir), "--out", str(out),
            "--from_teacher_layers", "1", "--teacher_quantize", "int4", "--context", "32",
            "--train.max_steps", "2", "--train.batch_size", "2", "--train.eval_batches", "1"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["stage"] == "distill" and results["teacher_quantize"] == "int4"
    assert 0 <= results["val_agreement_after"] <= 1
    assert "agreement" in capsys.readouterr().out
    assert main([*argv[:-2], "--alpha", "2"]) == 2
    assert "--alpha must be in [0, 1], got 2" in capsys.readouterr().err
