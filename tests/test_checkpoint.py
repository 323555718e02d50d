"""Checkpoint directories: round trips, atomic writes, and clear errors for broken ones (also via the CLI)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.models.info import model_info

TINY = dict(vocab_size=61, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=32)


def make_tokenizer(path):
    from tokenizers import Tokenizer, models

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3}
    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return path


@pytest.mark.parametrize(
    "overrides", [{}, {"tie_embeddings": False, "attn_bias": True}, {"norm": "layernorm", "mlp": "gelu"}]
)
def test_round_trip_is_exact(overrides, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, **overrides})).eval()
    save_model(model, tmp_path / "ckpt", tokenizer_dir=make_tokenizer(tmp_path / "tok"))
    loaded, tok_dir = load_model(tmp_path / "ckpt"), tmp_path / "ckpt"
    assert loaded.config == model.config
    assert tok_dir == tmp_path / "ckpt" and (tok_dir / "tokenizer_config.json").exists()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["bos_token_id"] == 1 and config["eos_token_id"] == 2
    if model.config.tie_embeddings:
        assert "lm_head.weight" not in load_file(tmp_path / "ckpt" / "model.safetensors")


def test_load_model_casts_dtype(tmp_path):
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    assert load_model(tmp_path / "ckpt", dtype=torch.bfloat16).embed.weight.dtype == torch.bfloat16


def test_failed_save_leaves_nothing_behind(tmp_path):
    with pytest.raises(TinyLMError, match="holds no tokenizer.json"):
        save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt", tokenizer_dir=tmp_path)
    assert not (tmp_path / "ckpt").exists()


def edit_weights(ckpt, change):
    path = ckpt / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def test_missing_tensor_is_named(tmp_path, capsys):
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    edit_weights(tmp_path / "ckpt", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(TinyLMError, match="lacks tensor 'model.layers.1.mlp.up_proj.weight'"):
        load_model(tmp_path / "ckpt")
    assert main(["export", "hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error:") and "model.layers.1.mlp.up_proj.weight" in err
    assert "Traceback" not in err and not (tmp_path / "hf").exists()


def test_unexpected_tensor_and_wrong_shape_are_named(tmp_path):
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    edit_weights(tmp_path / "ckpt", lambda t: t.update({"model.layers.9.extra": torch.zeros(2)}))
    with pytest.raises(TinyLMError, match="unexpected tensor 'model.layers.9.extra'"):
        load_model(tmp_path / "ckpt")
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    edit_weights(tmp_path / "ckpt", lambda t: t.update({"model.norm.weight": torch.zeros(31)}))
    with pytest.raises(
        TinyLMError, match=r"'model.norm.weight' has shape \(31,\), the config implies \(32,\)"
    ):
        load_model(tmp_path / "ckpt")


def test_heads_not_dividing_width_via_cli(tmp_path, capsys):
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config["tinylm"]["n_head"] = 5
    config_path.write_text(json.dumps(config))
    assert main(["info", str(tmp_path / "ckpt")]) == 2
    assert "n_head=5 does not divide model.d_model=32" in capsys.readouterr().err


def test_transformers_config_with_bad_heads_via_cli(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    hf = dict(model_type="llama", vocab_size=10, hidden_size=30, num_hidden_layers=1, num_attention_heads=4)
    (tmp_path / "src" / "config.json").write_text(json.dumps({**hf, "intermediate_size": 8}))
    make_tokenizer(tmp_path / "src")
    assert main(["import", "hf", str(tmp_path / "src"), "--out", str(tmp_path / "o")]) == 2
    assert "does not divide model.d_model=30" in capsys.readouterr().err


def test_unsupported_sources_are_refused(tmp_path):
    (tmp_path / "pickle").mkdir()
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "pickle")
    (tmp_path / "pickle" / "model.safetensors").rename(tmp_path / "pickle" / "pytorch_model.bin")
    with pytest.raises(TinyLMError, match="safetensors only"):
        load_model(tmp_path / "pickle")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(TinyLMError, match="model_type 'gpt2' is not supported"):
        load_model(tmp_path / "gpt2")
    with pytest.raises(TinyLMError, match="no config.json"):
        load_model(tmp_path)


def test_export_refuses_configs_without_a_transformers_twin(tmp_path, capsys):
    save_model(build_model(ModelConfig(**TINY, norm="layernorm")), tmp_path / "ckpt")
    assert main(["export", "hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    assert "layernorm has no transformers" in capsys.readouterr().err


def test_output_directory_guard(tmp_path, capsys):
    save_model(build_model(ModelConfig(**TINY)), tmp_path / "ckpt")
    assert main(["export", "hf", str(tmp_path / "ckpt")]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    assert main(["export", "hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "ckpt")]) == 2
    assert "already exists" in capsys.readouterr().err
    argv = ["export", "hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "ckpt"), "--overwrite", "true"]
    assert main(argv) == 0
    assert load_model(tmp_path / "ckpt").config == ModelConfig(**TINY)


def test_info_prints_counts_and_flops(capsys):
    model_info("smollm2-135m", context=256)
    out = capsys.readouterr().out
    assert "134,515,008 total" in out and "training FLOPs per token at context 256" in out
