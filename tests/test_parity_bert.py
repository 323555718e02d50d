"""The bert family against transformers' BERT: logits and loss of BertForMaskedLM, export and import, and the
real all-MiniLM-L6-v2 (hidden states, sentence embeddings, WordPiece ids)."""

import pytest
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.infer.embed import embed_texts, mean_pool
from tinylm.interop.hf import export_hf, import_hf
from tinylm.models import ModelConfig, build_model, load_model, param_counts, save_model
from tinylm.models.checkpoint import hf_names

transformers = pytest.importorskip("transformers")

MODERN = dict(
    position="rope", norm="rmsnorm", norm_placement="pre", mlp="swiglu", attn_bias=False, mlp_bias=False
)
SHAPE = dict(family="bert", vocab_size=97, d_model=32, n_layer=2, n_head=4, max_seq_len=40)
MIXED = [
    "Hello, World! Café déjà vu, naïve ÉCOLE.",
    "我爱北京天安门，今天是2024年12月1日。",
    "emoji 😀🎉 and numbers 3.14159 and 1,000,000",
    "mixed: 東京 Tokyo 🗼 x² + y² ≠ z²",
]


def random_bert(**overrides):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**SHAPE, **overrides})).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name would show
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_twin(model):
    c = model.config
    config = transformers.BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        intermediate_size=c.d_ff,
        max_position_embeddings=c.max_seq_len,
        layer_norm_eps=c.norm_eps,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    twin = transformers.BertForMaskedLM(config).eval()
    names = hf_names(model)
    state = {names[n]: p for n, p in model.named_parameters() if not n.startswith("pooler.")}
    result = twin.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    return twin


def padded_batch(vocab):
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 7], labels[2, 0] = 5, 9, 11
    return ids, mask, types, labels


def test_logits_and_loss_match_transformers_on_a_padded_batch_with_token_types():
    ours = random_bert()
    hf = hf_twin(ours)
    ids, mask, types, labels = padded_batch(97)
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        logits = ours(ids, attention_mask=mask, token_type_ids=types)
        kept = ours(ids, attention_mask=mask, token_type_ids=types, keep=labels != -100)
    torch.testing.assert_close(logits[real], theirs.logits[real], atol=1e-5, rtol=0)
    loss = F.cross_entropy(kept, labels[labels != -100])
    assert abs(float(loss) - float(theirs.loss)) <= 1e-5


def test_param_counts_match_the_built_model():
    for overrides in (
        {},
        {"pooler": True},
        {"type_vocab_size": 0},
        {"position": "rope"},
        {"tie_embeddings": False},
        MODERN,
    ):
        model = random_bert(**overrides)
        counts = param_counts(model.config)
        assert counts.total == model.num_params()
        assert counts.blocks == model.num_params(non_embedding=True)


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
    ours = random_bert(pooler=True)
    save_model(ours, tmp_path / "ckpt")
    export_hf(str(tmp_path / "ckpt"), out=str(tmp_path / "hf"))
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert type(hf).__name__ == "BertForMaskedLM"
    base = transformers.BertModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids, mask, types, _ = padded_batch(97)
    real = mask.bool()
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids, mask, token_type_ids=types)[real], hf(ids, mask, types).logits[real], atol=1e-5, rtol=0
        )
        pooled = ours.pooled(ours.hidden(ids, mask, token_type_ids=types))
        torch.testing.assert_close(pooled, base(ids, mask, types).pooler_output, atol=1e-5, rtol=0)


def test_import_of_a_transformers_masked_lm_matches_it(tmp_path):
    from tokenizers import Tokenizer, models

    torch.manual_seed(3)
    config = transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, hidden_act="gelu_new", type_vocab_size=3,
    )  # fmt: skip
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path / "src")
    Tokenizer(models.WordLevel({"[SEP]": 0}, unk_token="[SEP]")).save(
        str(tmp_path / "src" / "tokenizer.json")
    )
    (tmp_path / "src" / "tokenizer_config.json").write_text('{"sep_token": "[SEP]"}')
    import_hf(str(tmp_path / "src"), out=str(tmp_path / "ckpt"))
    ours = load_model(tmp_path / "ckpt")
    assert ours.config.mlp == "gelu" and ours.config.type_vocab_size == 3 and ours.config.d_ff == 64
    assert not ours.config.pooler  # BertForMaskedLM has none
    ids, mask, types, _ = padded_batch(97)
    types[:, 9:] = 2
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(ids, mask, types).logits
        torch.testing.assert_close(
            ours(ids, mask, token_type_ids=types)[real], theirs[real], atol=1e-5, rtol=0
        )


def test_an_encoder_refuses_to_decode():
    model = random_bert()
    with pytest.raises(TinyLMError, match="needs a decoder or encoder-decoder.*pretrain --objective mlm"):
        model.new_cache(1, 8)


def test_a_modern_bert_variant_trains_round_trips_and_has_no_transformers_twin(tmp_path):
    model = random_bert(**MODERN).train()
    assert not isinstance(model.norm, torch.nn.Identity)  # pre-norm: a final norm after the last block
    ids, mask, _, labels = padded_batch(97)
    loss = F.cross_entropy(model(ids, mask, keep=labels != -100), labels[labels != -100])
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("pooler"))
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model.eval()(ids, mask))
    with pytest.raises(TinyLMError, match="model.position=rope has no transformers BERT twin"):
        export_hf(str(tmp_path / "ckpt"), out=str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def minilm():
    from tinylm.interop.packaged import minilm_dir

    try:
        return minilm_dir()
    except TinyLMError as e:
        pytest.skip(str(e))


def test_minilm_wordpiece_ids_equal_transformers(minilm):
    from tinylm.tokenizer import Tokenizer

    ours, theirs = Tokenizer.load(minilm), transformers.AutoTokenizer.from_pretrained(minilm)
    assert (ours.mask_token, ours.cls_token, ours.eos_token, ours.pad_id) == ("[MASK]", "[CLS]", "[SEP]", 0)
    for text in MIXED:
        assert ours.encode(text, frame=True) == theirs(text).input_ids
        assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids
    long = " ".join(MIXED * 20)
    assert (
        ours.encode(long, frame=True, max_length=64) == theirs(long, truncation=True, max_length=64).input_ids
    )


@pytest.mark.slow
def test_minilm_imports_and_matches_transformers_hidden_states_and_embeddings(minilm, tmp_path, capsys):
    from tinylm.tokenizer import Tokenizer

    import_hf(str(minilm), out=str(tmp_path / "minilm"))
    assert "freshly initialised" in capsys.readouterr().err  # a BertModel has no MLM head
    import_hf(str(minilm), out=str(tmp_path / "again"))
    assert (tmp_path / "minilm" / "model.safetensors").read_bytes() == (
        tmp_path / "again" / "model.safetensors"
    ).read_bytes()  # and that head starts the same every time
    ours, tok = load_model(tmp_path / "minilm"), Tokenizer.load(tmp_path / "minilm")
    assert ours.config.pooler  # a BertModel's pooler comes along
    ref = transformers.BertModel.from_pretrained(minilm, local_files_only=True).eval()
    batch = transformers.AutoTokenizer.from_pretrained(minilm)(MIXED, padding=True, return_tensors="pt")
    real = batch.attention_mask.bool()
    with torch.no_grad():
        theirs = ref(**batch).last_hidden_state
        hidden = ours.hidden(batch.input_ids, batch.attention_mask, token_type_ids=batch.token_type_ids)
    assert float((hidden - theirs)[real].abs().max()) <= 1e-4
    reference = F.normalize(mean_pool(theirs, batch.attention_mask), dim=-1)
    assert float(F.cosine_similarity(embed_texts(ours, tok, MIXED, batch_size=3), reference).min()) >= 0.99999
