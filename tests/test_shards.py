"""Token shards: manifests equal a direct count, split boundaries, window samplers, reruns and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinylm.cli import main
from tinylm.data import read_documents
from tinylm.data.readers import read_text
from tinylm.data.shards import RandomWindows, TokenShards, prepare_shards, sequential_windows
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return Tokenizer.load(tiny_tokenizer_dir)


def encode_docs(tok, docs):
    return [t for d in docs for t in tok.encode(d, special=False) + [tok.eos_id]]


def test_document_split_manifest_equals_direct_count(tiny_shards_dir, tiny_corpus_dir, tok):
    shards = TokenShards.open(tiny_shards_dir)
    docs = list(read_documents(str(tiny_corpus_dir)))
    val_docs = docs[9::10]  # every 10th document
    train_docs = [d for i, d in enumerate(docs) if i % 10 != 9]
    m = shards.manifest
    assert (m["dtype"], m["vocab_size"], m["eos_id"], m["split_by"]) == ("uint16", 1024, 0, "documents")
    assert m["tokenizer_hash"] == tok.hash
    for name, split_docs in (("train", train_docs), ("val", val_docs)):
        tokens = shards.split(name)
        assert tokens.dtype == np.uint16
        assert tokens.tolist() == encode_docs(tok, split_docs)
        info = m["splits"][name]
        assert info["documents"] == len(split_docs)
        assert info["tokens"] == len(tokens) == (tiny_shards_dir / info["file"]).stat().st_size // 2
        assert info["bytes"] == sum(len(d.encode("utf-8")) for d in split_docs)


def test_single_text_file_splits_by_characters(tmp_path, tiny_corpus_dir, tiny_tokenizer_dir, tok):
    path = tiny_corpus_dir / "plays.txt"
    shards = prepare_shards(
        str(path), str(tiny_tokenizer_dir), str(tmp_path / "s"), val_fraction=0.25, workers=1
    )
    text = read_text(path)
    cut = int(len(text) * 0.75)
    assert shards.manifest["split_by"] == "characters"
    for name, part in (("train", text[:cut]), ("val", text[cut:])):
        assert shards.split(name).tolist() == encode_docs(tok, [part])
        assert shards.manifest["splits"][name]["bytes"] == len(part.encode("utf-8"))
        assert shards.manifest["splits"][name]["documents"] == 1


def test_parallel_workers_write_the_same_shards(
    tmp_path, tiny_corpus_dir, tiny_tokenizer_dir, tiny_shards_dir
):
    prepare_shards(str(tiny_corpus_dir), str(tiny_tokenizer_dir), str(tmp_path / "p"), workers=2)
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "p" / name).read_bytes() == (tiny_shards_dir / name).read_bytes()


def test_special_strings_in_data_are_not_control_tokens(tmp_path, tiny_tokenizer_dir, tok):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x<|endoftext|>y<|im_start|>"}) + "\n")
    shards = prepare_shards(
        str(tmp_path / "a.jsonl"), str(tiny_tokenizer_dir), str(tmp_path / "s"), 0.0, workers=1
    )
    train = shards.split("train").tolist()
    assert (
        train[-1] == tok.eos_id
        and tok.eos_id not in train[:-1]
        and tok.token_to_id("<|im_start|>") not in train
    )
    assert tok.decode(train[:-1]) == "x<|endoftext|>y<|im_start|>"
    assert len(shards.split("val")) == 0


def test_check_tokenizer(tiny_shards_dir, tiny_tokenizer_dir, tok, tmp_path):
    shards = TokenShards.open(tiny_shards_dir)
    shards.check_tokenizer(tok)
    edited = (tiny_tokenizer_dir / "tokenizer.json").read_bytes() + b" "
    other = Tokenizer(edited, tok.config)  # same tokens, different file: a different hash
    with pytest.raises(TinyLMError, match="tokenised with another tokenizer"):
        shards.check_tokenizer(other)
    with pytest.raises(TinyLMError, match="no manifest.json"):
        TokenShards.open(tmp_path)


def test_random_windows_are_a_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = RandomWindows(tokens, context=16, batch_size=4, seed=7)
    x, y = windows.batch(3)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    assert torch.equal(x, RandomWindows(tokens, 16, 4, seed=7).batch(3)[0])
    assert not torch.equal(x, windows.batch(4)[0])
    assert not torch.equal(x, RandomWindows(tokens, 16, 4, seed=8).batch(3)[0])
    last = RandomWindows(tokens[:17], 16, 2, 0).batch(0)[1]
    assert last.tolist() == [list(range(1, 17))] * 2  # the one window that fits, reaching the last token
    with pytest.raises(TinyLMError, match="too short"):
        RandomWindows(tokens[:16], 16, 2, 0)


@pytest.mark.parametrize("n", [2, 17, 33, 100, 101])
def test_sequential_windows_predict_every_token_once(n):
    tokens = np.arange(n, dtype=np.uint32)
    xs, ys, shapes = [], [], []
    for x, y in sequential_windows(tokens, context=8, batch_size=3):
        assert x.dtype == y.dtype == torch.int64 and torch.equal(y, x + 1)
        shapes.append(tuple(x.shape))
        xs += x.flatten().tolist()
        ys += y.flatten().tolist()
    assert ys == list(range(1, n))
    assert xs == list(range(n - 1))
    full, tail = divmod(n - 1, 8)
    assert shapes[: full // 3] == [(3, 8)] * (full // 3)
    assert shapes[-1] == ((1, tail) if tail else (full % 3 or 3, 8))


def test_rerun_skips_a_different_run_is_refused(tmp_path, tiny_corpus_dir, tiny_tokenizer_dir, capsys):
    out = tmp_path / "s"
    args = [
        "data",
        "prepare",
        "--data",
        str(tiny_corpus_dir / "plays.txt"),
        "--tokenizer",
        str(tiny_tokenizer_dir),
    ]
    assert main([*args, "--out", str(out), "--workers", "1"]) == 0
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert main([*args, "--out", str(out)]) == 0  # workers do not change the output, so they are not compared
    assert "already holds these shards; skipping" in capsys.readouterr().out
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    assert main([*args, "--out", str(out), "--val-fraction", "0.2"]) == 2
    err = capsys.readouterr().err
    assert f"output directory {out} already holds a different run: val_fraction (was 0.1, now 0.2)" in err
    assert TokenShards.open(out).manifest["val_fraction"] == 0.1


def test_cli_bad_val_fraction_and_tokenizer(tmp_path, tiny_tokenizer_dir, capsys):
    base = ["data", "prepare", "--data", "tang300", "--out", str(tmp_path / "s")]
    assert main([*base, "--tokenizer", str(tiny_tokenizer_dir), "--val-fraction", "1"]) == 2
    assert "val_fraction must be in [0, 1), got 1.0" in capsys.readouterr().err
    assert main([*base, "--tokenizer", str(tmp_path / "none")]) == 2
    assert "no tokenizer.json here" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
