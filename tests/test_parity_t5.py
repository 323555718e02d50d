"""The t5 family against transformers' T5ForConditionalGeneration (v1.0: relu, tied; v1.1: gated-gelu, untied)."""

import pytest
import torch

from tinylm.infer.engine import Engine
from tinylm.infer.sampling import SamplingParams
from tinylm.interop.hf import export_hf, import_hf
from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.models.checkpoint import hf_names
from tinylm.models.components.relative import relative_position_bucket
from tinylm.models.lora import LoraConfig, apply_lora
from tinylm.models.quant import quantize_int4

transformers = pytest.importorskip("transformers")

CASES = {
    "v1.0-relu-tied": dict(mlp="relu", tie_embeddings=True),
    "v1.1-gated-gelu-untied": dict(mlp="gated-gelu", tie_embeddings=False, n_decoder_layer=3),
}


def random_t5(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    shape = dict(vocab_size=96, d_model=32, n_layer=2, n_head=4, d_ff=48, max_seq_len=64, norm_eps=1e-6)
    config = ModelConfig(family="t5", relative_buckets=8, relative_max_distance=20, **{**shape, **overrides})
    return build_model(config).eval()


def hf_twin(ours) -> torch.nn.Module:
    """transformers' T5 with our weights copied in by name."""
    from tinylm.models import get_family

    hf_config = get_family("t5").to_hf_config(
        ours.config, torch.float32, {"pad_token_id": 0, "eos_token_id": 1}
    )
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_config)).eval()
    if not ours.config.tie_embeddings:  # transformers 5 ties T5's head unless a checkpoint holds its own
        hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
    names = hf_names(ours)
    state = {names[n]: p for n, p in ours.named_parameters()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    return hf


def padded_batch(vocab: int):
    torch.manual_seed(1)
    ids = torch.randint(2, vocab, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :7] = 0
    labels = torch.randint(2, vocab, (3, 6))
    labels[0, 4:] = -100
    return ids, mask, labels


def shift_right(labels: torch.Tensor, start: int, pad: int = 0) -> torch.Tensor:
    """transformers' decoder inputs for `labels`: the start token, then the labels with -100 as `pad`."""
    dec = labels.new_full(labels.shape, start)
    dec[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, pad)
    return dec


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_equal_transformers(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(64)[None, :] - torch.arange(64)[:, None]
    for buckets, distance in ((32, 128), (8, 20)):
        theirs = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
        assert torch.equal(relative_position_bucket(rel, bidirectional, buckets, distance), theirs)


@pytest.mark.parametrize("case", CASES)
def test_encoder_logits_and_loss_match_transformers(case):
    ours = random_t5(**CASES[case])
    hf = hf_twin(ours)
    ids, mask, labels = padded_batch(ours.config.vocab_size)
    dec = shift_right(labels, ours.config.decoder_start_id)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, labels=labels)
        real = mask.bool()
        torch.testing.assert_close(
            ours.encode(ids, mask)[real], out.encoder_last_hidden_state[real], atol=1e-5, rtol=0
        )
        logits = ours(ids, attention_mask=mask, decoder_input_ids=dec)
        torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_cached_decoding_matches_full_forward(case):
    ours = random_t5(**CASES[case])
    ids, mask, labels = padded_batch(ours.config.vocab_size)
    dec = shift_right(labels.clamp(min=0), ours.config.decoder_start_id)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, decoder_input_ids=dec)
        cache = ours.new_cache(3, 4)
        steps = [ours(ids, attention_mask=mask, cache=cache)]  # encodes, then the start token
        steps += [ours(dec[:, t : t + 1], cache=cache) for t in range(1, dec.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_engine_greedy_generation_equals_transformers_generate(case):
    # transformers' generate sizes its cache by the encoder's depth, so both stacks are equally deep here
    ours = random_t5(**{**CASES[case], "n_decoder_layer": 2})
    hf = hf_twin(ours)
    ids, mask, _ = padded_batch(ours.config.vocab_size)
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8, min_new_tokens=8
        )[:, 1:]
    engine = Engine(ours, _NoStop())
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    seqs = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True))
    assert [s.token_ids for s in seqs] == theirs.tolist()
    # one by one, and streamed, the same tokens and text
    for prompt, seq in zip(prompts, seqs, strict=True):
        alone = engine.sequence(prompt, SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True))
        text = "".join(engine.stream(alone))
        assert alone.token_ids == seq.token_ids and text == seq.text


def test_continuous_batching_rows_join_and_leave():
    """A batch of 2 fed 5 prompts of different budgets: rows leave (keep) and join (merge) mid-decode."""
    ours = random_t5(**CASES["v1.1-gated-gelu-untied"])
    engine = Engine(ours, _NoStop(), max_batch_size=2)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16, 17, 18], [19, 20]]
    params = [SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True) for n in (3, 9, 5, 2, 7)]
    together = engine.generate(prompts, params)
    alone = [Engine(ours, _NoStop()).generate([p], sp)[0] for p, sp in zip(prompts, params, strict=True)]
    assert [s.token_ids for s in together] == [s.token_ids for s in alone]


@pytest.mark.parametrize("case", CASES)
def test_export_loads_in_transformers_and_import_matches(case, tmp_path, tiny_tokenizer_dir):
    ours = random_t5(**CASES[case], vocab_size=1024)
    save_model(ours, tmp_path / "ckpt", tiny_tokenizer_dir)
    export_hf(str(tmp_path / "ckpt"), out=str(tmp_path / "hf"))
    hf = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "hf", local_files_only=True
    ).eval()
    ids, mask, labels = padded_batch(96)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, labels=labels)
        dec = shift_right(labels, ours.config.decoder_start_id, hf.config.pad_token_id)
        torch.testing.assert_close(ours(ids, mask, decoder_input_ids=dec), out.logits, atol=1e-5, rtol=0)
    # transformers' own save of a T5 imports as ours
    hf.config.tinylm = None
    del hf.config.tinylm
    hf.save_pretrained(tmp_path / "theirs")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "theirs" / name).write_bytes((tiny_tokenizer_dir / name).read_bytes())
    import_hf(str(tmp_path / "theirs"), out=str(tmp_path / "imported"))
    back = load_model(tmp_path / "imported")
    assert back.config.mlp == ours.config.mlp and back.config.tie_embeddings == ours.config.tie_embeddings
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, decoder_input_ids=dec), out.logits, atol=1e-5, rtol=0)


def test_int4_and_lora_reach_encoder_and_decoder_blocks():
    ours = random_t5(**CASES["v1.1-gated-gelu-untied"], d_model=64, d_ff=128)
    names = apply_lora(ours.blank(), LoraConfig(targets=["q", "wi_0"]))
    assert "encoder.block.1.layer.0.SelfAttention.q" in names
    assert (
        "decoder.block.2.layer.1.EncDecAttention.q" in names
        and "decoder.block.0.layer.2.DenseReluDense.wi_0" in names
    )
    ids, mask, labels = padded_batch(96)
    dec = shift_right(labels.clamp(min=0), 0)
    with torch.no_grad():
        before = ours(ids, mask, decoder_input_ids=dec)
        report = quantize_int4(ours)
        after = ours(ids, mask, decoder_input_ids=dec)
    # q k v o + 3 MLP per encoder block; decoder blocks add cross-attention's q k v o. Fusion makes self-
    # attention's q k v one layer and the gated MLP's gate and up another (never cross-attention's).
    assert report.quantized + report.fused == 2 * 7 + 3 * 11 and not report.kept
    assert report.fused == 5 * (2 + 1)
    cosine = torch.nn.functional.cosine_similarity(after.flatten(), before.flatten(), dim=0)
    assert not torch.equal(after, before) and cosine > 0.95  # 4-bit rounding of random weights, still close


class _NoStop:
    """The few tokenizer calls the engine makes, for a random model whose ids mean nothing."""

    eos_id, bos_id = 1, None

    def token_to_id(self, token):
        return None

    def encode(self, text):
        return [ord(c) % 90 + 2 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids)) + (" " if ids else "")

    def apply_chat_template(self, *a, **k):
        raise ValueError("no template")


def test_server_batches_concurrent_requests_to_a_t5(tmp_path, tiny_tokenizer_dir, live_server, one_thread):
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from tinylm.serve.app import create_app

    save_model(random_t5(**CASES["v1.0-relu-tied"], vocab_size=1024), tmp_path / "t5", tiny_tokenizer_dir)
    engine = Engine.load(tmp_path / "t5")
    prompts = ["To be", "床前明月光", "The quick brown fox"]
    want = [s.text for s in engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12))]
    server = live_server(create_app(engine, "t5", max_batch=2))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

    def ask(prompt):
        return (
            client.completions.create(model="t5", prompt=prompt, max_tokens=12, temperature=0).choices[0].text
        )

    try:
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(ask, prompts)) == want
    finally:
        server.close()


def test_continuation_logprobs_of_a_t5_equal_its_full_forward():
    """Evaluation by label log-likelihood: the prompt encoded once, answers decoded from the start token."""
    from tinylm.infer.scoring import continuation_logprobs

    ours = random_t5(**CASES["v1.1-gated-gelu-untied"])
    prompt, answers = [5, 6, 7, 8], [[9], [10, 11, 12], [13, 14]]
    got = continuation_logprobs(ours, prompt, answers)
    for answer, value in zip(answers, got, strict=True):
        labels = torch.tensor([answer])
        with torch.no_grad():
            logits = ours(torch.tensor([prompt]), decoder_input_ids=shift_right(labels, 0))
        want = logits.log_softmax(-1).gather(-1, labels[..., None]).sum()
        assert value == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("overrides", [*CASES.values(), dict(mlp="gated-gelu", n_kv_head=2)])
def test_param_counts_from_the_config_equal_the_built_model(overrides):
    from tinylm.models import param_counts

    ours = random_t5(**overrides)
    counts = param_counts(ours.config)
    assert counts.total == ours.num_params()
    assert counts.blocks == ours.num_params(non_embedding=True) - (0 if counts.tied else counts.lm_head)


def test_activation_checkpointing_of_encoder_and_decoder_blocks_keeps_the_gradients():
    import functools

    from tinylm.train.loop import enable_activation_checkpointing

    ids, mask, labels = padded_batch(96)
    dec = shift_right(labels.clamp(min=0), 0)
    grads = []
    for checkpointed in (False, True):
        ours = random_t5(**CASES["v1.1-gated-gelu-untied"]).train()
        if checkpointed:
            enable_activation_checkpointing(ours)
            assert all(
                isinstance(b.forward, functools.partial) for b in [*ours.encoder_blocks, *ours.decoder_blocks]
            )
        ours(ids, mask, decoder_input_ids=dec).square().mean().backward()
        grads.append({n: p.grad for n, p in ours.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
