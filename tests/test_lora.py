"""LoRA: merge / unmerge, and parity with Hugging Face PEFT on the transformers twin."""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.models.lora import (
    LoraConfig,
    LoRALinear,
    apply_lora,
    load_adapters,
    lora_modules,
    merge,
    merged_model,
    save_adapters,
    unmerge,
)

peft = pytest.importorskip("peft")
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def adapted(random_llama):
    """A factory: a random tiny model with adapters whose B is random too (a fresh B is zero and would hide
    bugs)."""

    def make(targets: list[str], rank: int = 4, seed: int = 0, **model_overrides):
        model = random_llama(**model_overrides)
        apply_lora(model, LoraConfig(rank=rank, alpha=2.0 * rank + 1, targets=targets))
        torch.manual_seed(seed)
        with torch.no_grad():
            for m in lora_modules(model).values():
                m.lora_B.weight.normal_(0.0, 0.3)
        return model.eval()

    return make


def test_merge_keeps_logits_and_unmerge_restores_weights_exactly(adapted):
    model = adapted(ALL)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    before_w = {n: p.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        before = model(ids)
        merge(model)
        merged = model(ids)
        q = model.blocks[0].attn.q_proj.base_layer.weight
        assert not torch.equal(q, before_w["blocks.0.attn.q_proj.base_layer.weight"])
        unmerge(model)
        after = model(ids)
    torch.testing.assert_close(merged, before, atol=1e-5, rtol=0)
    assert torch.equal(after, before)
    for n, p in model.named_parameters():
        assert torch.equal(p, before_w[n]), n
    plain = merged_model(model)
    assert not lora_modules(plain) and lora_modules(model)  # the original keeps its adapters
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "targets",
    [ALL, ["q_proj", "v_proj"], [r"model\.layers\.1\.mlp\.(gate|down)_proj"]],
    ids=["all-linear", "attention-qv", "regex-one-block"],
)
def test_peft_loads_our_adapters_onto_the_transformers_twin(
    tmp_path, targets, random_llama, hf_twin, adapted
):
    ours = adapted(targets, tie_embeddings=False)
    base = random_llama(tie_embeddings=False)  # the same random base weights, without adapters
    hf = peft.PeftModel.from_pretrained(hf_twin(base), save_adapters(ours, tmp_path / "adapter")).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(ids), atol=1e-5, rtol=0)
    wrapped = [n for n, m in hf.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]
    assert len(wrapped) == len(lora_modules(ours))

    # ... and our loader reads the same directory back.
    again = random_llama(tie_embeddings=False)
    load_adapters(again, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(again.eval()(ids), ours(ids))


def test_we_load_adapters_that_peft_wrote(tmp_path, random_llama, hf_twin):
    base = random_llama()
    hf = peft.get_peft_model(
        hf_twin(base), peft.LoraConfig(r=3, lora_alpha=5, target_modules=["k_proj", "up_proj"])
    )
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3)
    hf.save_pretrained(tmp_path)
    ours = random_llama()
    config = load_adapters(ours, tmp_path)
    assert (config.rank, config.alpha) == (3, 5)
    ids = torch.randint(0, base.config.vocab_size, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids), hf.eval()(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_fresh_adapters_change_nothing_and_only_targets_are_wrapped(random_llama):
    model = random_llama()
    ids = torch.randint(0, model.config.vocab_size, (1, 5))
    with torch.no_grad():
        before = model(ids)
    names = apply_lora(model, LoraConfig(rank=2, targets=["self_attn.v_proj"]))
    assert names == ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]
    assert all(isinstance(layer.attn.v_proj, LoRALinear) for layer in model.blocks)
    assert not isinstance(model.blocks[0].attn.q_proj, LoRALinear)
    with torch.no_grad():
        assert torch.equal(model(ids), before)


@pytest.mark.parametrize("target", ["qkv_proj", "lm_head", "embed", "mlp"])
def test_a_target_matching_no_layer_is_refused(target, random_llama):
    with pytest.raises(TinyLMError, match=rf"LoRA target '{target}' matches no linear layer.*q_proj"):
        apply_lora(random_llama(), LoraConfig(targets=["q_proj", target]))


def test_adapter_config_is_what_peft_expects(tmp_path, random_llama, adapted):
    save_adapters(adapted(["q_proj"], rank=4), tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 9.0
    assert config["target_modules"] == ["q_proj"]
    with pytest.raises(TinyLMError, match="no LoRA adapters"):
        save_adapters(random_llama(), tmp_path / "b")
