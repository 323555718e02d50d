"""T5 span corruption: the noise statistics, exact reconstruction, sentinels, and `tinylm pretrain` of a t5."""

import json

import numpy as np
import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer
from tinylm.train.objectives.span import (
    SpanWindows,
    add_sentinels,
    corrupt,
    fitting_length,
    noise_mask,
    sentinel_tokens,
)


def test_noise_density_and_mean_span_length():
    rng = np.random.default_rng(0)
    masks = [noise_mask(rng, 200) for _ in range(200)]
    noise = sum(int(m.sum()) for m in masks)
    spans = sum(int((m & ~np.concatenate([[False], m[:-1]])).sum()) for m in masks)
    assert noise / (200 * 200) == pytest.approx(0.15, abs=0.005)
    assert noise / spans == pytest.approx(3.0, abs=0.1)
    assert not any(m[0] for m in masks)  # a kept span comes first, as in T5


def test_inputs_and_targets_rebuild_the_original():
    rng = np.random.default_rng(1)
    sentinels, eos = list(range(1000, 1040)), 1
    for length in (10, 37, 256):
        tokens = rng.integers(2, 999, size=length)
        inputs, targets = corrupt(tokens, noise_mask(rng, length), sentinels, eos)
        assert inputs[-1] == eos and targets[-1] == eos
        spans, current = {}, None
        for t in targets[:-1]:
            if t in sentinels:
                current = spans.setdefault(t, [])
            else:
                current.append(t)
        rebuilt = [x for t in inputs[:-1] for x in (spans[t] if t in sentinels else [t])]
        assert rebuilt == tokens.tolist()


def test_batches_are_a_pure_function_of_their_index_and_fit_the_context():
    tokens = np.arange(5000) % 900 + 2
    windows = SpanWindows(tokens, 64, 4, 7, list(range(1000, 1020)), eos=1, start=0)
    a, b = windows.batch(3), windows.batch(3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(windows.batch(4)[0], a[0])
    inputs, decoder_inputs, labels = a
    assert inputs.shape[1] <= 64 and fitting_length(64) > 64
    assert torch.equal(decoder_inputs[:, 1:], labels[:, :-1]) and (decoder_inputs[:, 0] == 0).all()


def test_sentinels_join_the_end_of_the_vocabulary(tiny_tokenizer_dir, tmp_path):
    tok = Tokenizer.load(tiny_tokenizer_dir)
    text = "To be, or not to be"
    with_sentinels, ids = add_sentinels(tok, 64)
    assert ids == list(range(tok.vocab_size, tok.vocab_size + len(ids)))
    assert with_sentinels.encode(text) == tok.encode(text)
    assert with_sentinels.encode("<extra_id_1>") == [ids[1]]
    with_sentinels.save(tmp_path / "tok")
    again = Tokenizer.load(tmp_path / "tok")
    assert again.with_special_tokens(sentinel_tokens(len(ids))).vocab_size == with_sentinels.vocab_size


def test_a_sentinel_that_is_an_ordinary_token_is_refused(tiny_tokenizer_dir, tmp_path):
    data = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())
    data["model"]["vocab"]["<extra_id_0>"] = len(
        data["model"]["vocab"]
    )  # an ordinary entry that no merge makes
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(data))
    (tmp_path / "tok" / "tokenizer_config.json").write_bytes(
        (tiny_tokenizer_dir / "tokenizer_config.json").read_bytes()
    )
    with pytest.raises(TinyLMError, match="<extra_id_0>.*already an ordinary token"):
        add_sentinels(Tokenizer.load(tmp_path / "tok"), 64)


def test_pretrain_a_t5_with_span_corruption_resumes_and_generates(tiny_shards_dir, tmp_path, one_thread):
    import shutil

    from tinylm.infer.engine import Engine
    from tinylm.infer.sampling import SamplingParams
    from tinylm.models import ModelConfig, load_model
    from tinylm.train.config import TrainConfig
    from tinylm.train.stages.pretrain import pretrain

    shape = dict(d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=64, mlp="gated-gelu")
    train = TrainConfig(
        max_steps=4, batch_size=4, eval_every=2, eval_batches=1, checkpoint_every=2, device="cpu"
    )

    def run():
        model = ModelConfig(family="t5", **shape)  # the family's objective: span corruption
        return pretrain(str(tiny_shards_dir), str(tmp_path / "run"), model=model, train=train, context=48,
                        sample_tokens=5)  # fmt: skip

    first = run()
    assert first["val_span_loss"] > 0 and "sample" in first
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/val_loss" in m for m in metrics)
    straight = load_model(tmp_path / "run" / "model").state_dict()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")
    shutil.rmtree(tmp_path / "run" / "model")
    assert run()["step"] == 4  # resumed from step 2
    resumed = load_model(tmp_path / "run" / "model").state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
    engine = Engine.load(tmp_path / "run" / "model")
    assert engine.model.config.vocab_size == engine.tokenizer.vocab_size  # sentinels included
    assert engine.tokenizer.token_to_id("<extra_id_0>") is not None
    out = engine.generate(["To be, or <extra_id_0> to be"], SamplingParams(max_new_tokens=6, temperature=0))
    assert out[0].token_ids
