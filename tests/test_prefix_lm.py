"""The prefix LM (UniLM): a decoder whose mask reads a prefix both ways and the rest causally, trained with
`tinylm pretrain --objective prefix` and fine-tuned with the prompt as its prefix."""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.infer.engine import Engine
from tinylm.models import load_model
from tinylm.models.llama.hf import hf_architecture

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--model.d_model", "32", "--model.n_layer", "1", "--model.n_head", "2", "--model.max_seq_len", "32"]
QUICK = ["--train.max_steps", "6", "--train.batch_size", "4", "--train.warmup_steps", "1"]
QUICK += ["--train.eval_every", "3", "--train.eval_batches", "2", "--train.device", "cpu"]


def twins(random_llama):
    """The same weights as a causal LM and as a prefix LM."""
    causal = random_llama()
    prefix = random_llama(prefix_lm=True)
    prefix.load_state_dict(causal.state_dict())
    return causal.eval(), prefix.eval()


def bidirectional(model, ids):
    """Hidden states with every position seeing every other: the blocks fed an all-true mask."""
    T = ids.shape[1]
    x = model.embed(ids)
    rotary = model.rotary(torch.arange(T).expand_as(ids))
    mask = torch.ones(ids.shape[0], 1, T, T, dtype=torch.bool)
    for block in model.blocks:
        x = block(x, rotary, mask, None)
    return model.norm(x)


def test_prefix_zero_is_the_causal_lm_and_a_full_prefix_is_bidirectional(random_llama):
    causal, prefix = twins(random_llama)
    ids = torch.randint(0, causal.config.vocab_size, (3, 12))
    zero, full = torch.zeros(3, dtype=torch.long), torch.full((3,), 12)
    with torch.no_grad():
        assert (prefix(ids, prefix=zero) - causal(ids)).abs().max() < 1e-6
        assert (prefix.hidden(ids, prefix=full) - bidirectional(prefix, ids)).abs().max() < 1e-6
        # Without a prefix (scoring bits per byte) the prefix LM reads causally.
        assert torch.equal(prefix(ids), causal(ids))


def test_a_later_token_never_changes_an_earlier_output_but_a_prefix_token_does(random_llama):
    _, model = twins(random_llama)
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    split = torch.tensor([5])
    with torch.no_grad():
        base = model.hidden(ids, prefix=split)
        for t in range(5, 12):  # after the prefix: everything before t is unchanged
            changed = ids.clone()
            changed[0, t] = (changed[0, t] + 1) % model.config.vocab_size
            out = model.hidden(changed, prefix=split)
            assert torch.equal(out[:, :t], base[:, :t]), t
        changed = ids.clone()
        changed[0, 4] = (changed[0, 4] + 1) % model.config.vocab_size
        assert not torch.allclose(model.hidden(changed, prefix=split)[:, 0], base[:, 0])


def test_generation_reads_the_prompt_as_the_prefix(random_llama, tiny_tokenizer_dir):
    from tinylm.infer.sampling import SamplingParams
    from tinylm.tokenizer import Tokenizer

    _, model = twins(random_llama)
    tok = Tokenizer.load(tiny_tokenizer_dir)
    prompt = [5, 17, 42, 8, 99]
    seq = Engine(model, tok).generate([prompt], SamplingParams(temperature=0, max_new_tokens=6))[0]
    # Incremental decoding matches one full pass with the prompt as prefix, at every generated position.
    full = torch.tensor([prompt + seq.token_ids[:-1]])
    with torch.no_grad():
        logits = model(full, prefix=torch.tensor([len(prompt)]))[0, len(prompt) - 1 :]
    assert logits.argmax(-1).tolist() == seq.token_ids


def test_a_causal_model_refuses_a_prefix_and_a_prefix_lm_has_no_hf_twin(random_llama):
    causal, prefix = twins(random_llama)
    with pytest.raises(TinyLMError, match="prefix_lm"):
        causal(torch.tensor([[1, 2]]), prefix=torch.tensor([1]))
    with pytest.raises(TinyLMError, match="prefix_lm"):
        hf_architecture(prefix.config)


def test_pretrain_prefix_objective_then_sft_with_the_prompt_as_prefix(tiny_shards_dir, tiny_tasks, tmp_path):
    out = tmp_path / "prefix"
    args = ["pretrain", "--shards", str(tiny_shards_dir), "--out", str(out), *TINY, *QUICK]
    long_enough = ["--model.max_seq_len", "128", "--context", "32"]  # room for a poem conversation in SFT
    assert main([*args, *long_enough, "--objective", "prefix", "--sample_tokens", "4"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["val_bpb"] < 20 and results["last_eval_val_loss"] > 0
    assert load_model(out / "model").config.prefix_lm is True
    sft = tmp_path / "sft"
    data = tiny_tasks / "sft"
    sft_args = ["sft", "--model", str(out / "model"), "--data", str(data), "--out", str(sft), *QUICK]
    assert main(sft_args) == 0
    assert load_model(sft / "model").config.prefix_lm is True


def test_an_objective_that_does_not_fit_the_family_is_refused(tiny_shards_dir, tmp_path, capsys):
    out = tmp_path / "bad"
    args = ["pretrain", "--shards", str(tiny_shards_dir), "--out", str(out), *TINY, *QUICK]
    assert main([*args, "--objective", "nope"]) == 2
    assert "unknown objective 'nope'" in capsys.readouterr().err
    assert not out.exists()
