"""Masked-LM pretraining: BERT's masking recipe, its loss and evaluation, `tinylm pretrain --objective mlm` end
to end, and the commands an encoder must refuse."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tinylm.cli import main
from tinylm.data.chat import IGNORE
from tinylm.errors import TinyLMError
from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.tokenizer import MASK, Tokenizer
from tinylm.train.objectives.mlm import MaskedWindows, Masker, mlm_loss

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_BERT = ["--model.family", "bert", "--model.d_model", "32", "--model.n_layer", "1", "--model.n_head", "2"]
TINY_BERT += ["--model.max_seq_len", "32", "--sample_tokens", "0"]
QUICK = ["--train.max_steps", "8", "--train.batch_size", "4", "--train.warmup_steps", "2"]
QUICK += ["--train.eval_every", "4", "--train.eval_batches", "2", "--train.device", "cpu"]


def test_masking_shares_over_a_million_tokens(tiny_tokenizer_dir):
    tok = Tokenizer.load(tiny_tokenizer_dir)
    assert tok.mask_token == MASK and tok.mask_id is not None
    masker = Masker(tok)
    ids = np.random.default_rng(0).integers(0, tok.vocab_size, size=(1000, 1000))
    inputs, labels = masker(ids, np.random.default_rng(1))
    special = np.isin(ids, sorted(tok.special_ids))
    chosen = labels != IGNORE
    assert special.any() and not chosen[special].any()  # special tokens are never masked
    assert (labels[chosen] == ids[chosen]).all() and (inputs[~chosen] == ids[~chosen]).all()
    assert abs(chosen.sum() / (~special).sum() - 0.15) <= 0.003
    masked = inputs[chosen] == tok.mask_id
    unchanged = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~unchanged
    assert abs(masked.mean() - 0.8) <= 0.01
    assert abs(replaced.mean() - 0.1) <= 0.01 and abs(unchanged.mean() - 0.1) <= 0.01
    assert not np.isin(inputs[chosen][replaced], sorted(tok.special_ids)).any()  # random tokens are ordinary


def test_whole_words_are_chosen_together(tiny_tokenizer_dir):
    masker = Masker(Tokenizer.load(tiny_tokenizer_dir), rate=0.3)
    ids = np.random.default_rng(0).integers(20, 1000, size=(50, 60))
    starts = np.zeros_like(ids, dtype=bool)
    starts[:, ::3] = True  # words of three tokens
    _, labels = masker(ids, np.random.default_rng(2), word_starts=starts)
    words = (labels != IGNORE).reshape(50, 20, 3)
    assert words.any() and (words.all(-1) == words.any(-1)).all()


def test_jieba_words_of_byte_level_tokens_are_masked_together(tiny_tokenizer_dir):
    from tinylm.train.objectives.words import WordStarts

    tok = Tokenizer.load(tiny_tokenizer_dir)
    text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。To be, or not to be"
    ids = np.array([tok.encode(text)])
    starts = WordStarts(tok)(ids)[0]
    spelled = b"".join(tok.token_surfaces[i] for i in ids[0]).decode()
    assert spelled == text
    words, word = [], b""  # the token groups, spelled out
    for i, start in zip(ids[0], starts, strict=True):
        if start and word:
            words.append(word.decode("utf-8", "replace"))
            word = b""
        word += tok.token_surfaces[i]
    words.append(word.decode())
    assert {"故乡", "举头", "望明月", " not"} <= set(words)  # jieba's words, whatever the BPE pieces
    assert len(words) < len(ids[0])
    masker = Masker(tok, rate=0.5, whole_words=True)
    _, labels = masker(np.repeat(ids, 20, axis=0), np.random.default_rng(0))
    chosen = labels != IGNORE
    groups = np.cumsum(starts) - 1
    for row in chosen:  # a word's ordinary tokens are all chosen or none is
        for g in range(groups[-1] + 1):
            member = (groups == g) & ~np.isin(ids[0], sorted(tok.special_ids))
            assert row[member].all() or not row[member].any()


def test_a_batch_is_a_pure_function_of_its_index(tiny_tokenizer_dir):
    masker = Masker(Tokenizer.load(tiny_tokenizer_dir))
    tokens = np.random.default_rng(0).integers(10, 1000, size=5000).astype(np.uint16)
    windows = MaskedWindows(tokens, 32, 4, masker, seed=3)
    a, b, c = windows.batch(7), windows.batch(7), windows.batch(8)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["labels"], c["labels"])
    model = build_model(ModelConfig(family="bert", vocab_size=1024, d_model=32, n_layer=1, n_head=2))
    loss, metrics = mlm_loss(model, a)
    assert loss.item() > 0 and 0 <= metrics["mlm_accuracy"] <= 1


def test_a_tokenizer_without_a_mask_token_is_refused(tiny_tokenizer_dir, tmp_path):
    shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok")
    config_path = tmp_path / "tok" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["mask_token"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(TinyLMError, match="needs a mask token.*reserve <\\|mask\\|>"):
        Masker(Tokenizer.load(tmp_path / "tok"))


def test_pretrain_mlm_end_to_end_and_resume(tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--shards", str(tiny_shards_dir), "--out", str(out), *TINY_BERT, *QUICK]
    args += ["--train.checkpoint_every", "4", "--train.keep_last", "3"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "mlm" and results["step"] == 8 and "sample" not in results
    assert 0 <= results["val_mlm_accuracy"] <= 1 and results["val_masked_tokens"] > 100
    assert "masked-token accuracy" in (out / "README.md").read_text()
    straight = load_model(out / "model").state_dict()
    shutil.rmtree(out / "checkpoints" / "step-00000008")
    shutil.rmtree(out / "model")
    assert main(args) == 0  # resumes from step 4 and ends on the same weights
    resumed = load_model(out / "model")
    assert resumed.config.family == "bert"
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in straight.items())

    capsys.readouterr()
    assert main(["embed", "--model", str(out / "model"), "--text", "To be, or not to be"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["embedding"]) == 32 and abs(np.linalg.norm(row["embedding"]) - 1) < 1e-5


def test_pretrain_with_whole_word_masking(tiny_shards_dir, tmp_path):
    out = tmp_path / "wwm"
    quick = [*QUICK, "--train.max_steps", "2", "--train.eval_every", "0"]
    argv = ["pretrain", "--shards", str(tiny_shards_dir), "--out", str(out), *TINY_BERT, *quick]
    assert main([*argv, "--objective", "mlm-wwm"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "mlm-wwm" and results["val_masked_tokens"] > 100


def test_objectives_must_fit_the_family(tiny_shards_dir, tmp_path, capsys):
    base = ["pretrain", "--shards", str(tiny_shards_dir), *QUICK, "--sample_tokens", "0"]
    assert main([*base, "--out", str(tmp_path / "a"), *TINY_BERT, "--objective", "clm"]) == 2
    assert "objective 'clm' does not fit model.family='bert'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--objective", "mlm"]) == 2
    assert "objective 'mlm' does not fit model.family='llama'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture
def bert_checkpoint(tiny_tokenizer_dir, tmp_path):
    model = build_model(ModelConfig(family="bert", vocab_size=1024, d_model=32, n_layer=1, n_head=2))
    return save_model(model, tmp_path / "bert", tokenizer_dir=tiny_tokenizer_dir)


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--prompt", "Hi"],
        ["chat", "--say", '["Hi"]'],
        ["sft", "--data", "unused.jsonl", "--out", "x"],
        ["eval", "bpb", "--data", "tang300"],
    ],
)
def test_a_bert_checkpoint_in_a_decoder_command_names_what_fits(command, bert_checkpoint, capsys, tmp_path):
    verb = command[:2] if command[0] == "eval" else command[:1]
    argv = [*verb, "--model", str(bert_checkpoint), *command[len(verb) :]]
    if command[0] == "sft":
        (tmp_path / "unused.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
        argv = [a.replace("unused.jsonl", str(tmp_path / "unused.jsonl")) for a in argv]
        argv = [str(tmp_path / "x") if a == "x" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs a decoder or encoder-decoder family; this model is a bert encoder" in err
    assert "tinylm info, tinylm export hf, tinylm pretrain --objective mlm, tinylm embed" in err
