"""The decoder on its own: shapes, causality, padding, KV cache, parameter counts and FLOPs."""

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.models import PRESETS, Backbone, ModelConfig, build_model, model_flops_per_token, param_counts

TINY = dict(vocab_size=97, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=64)


def tiny(**overrides) -> Backbone:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **overrides})).eval()


def test_logits_shape_and_causality():
    model = tiny()
    ids = torch.randint(0, 97, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 97)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 97
    torch.testing.assert_close(model(changed)[:, :7], logits[:, :7])
    assert model.hidden(ids).shape == (2, 10, 32)


def test_left_padding_leaves_real_tokens_unchanged():
    model = tiny()
    ids = torch.randint(3, 97, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], dim=1).long()
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, 4:], model(ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", [{}, {"attn_bias": True, "tie_embeddings": False}])
def test_kv_cache_step_by_step_equals_full_forward(overrides):
    model = tiny(**overrides)
    ids = torch.randint(3, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding of unequal lengths
    mask[1, :2] = 0
    full = model(ids, attention_mask=mask)
    cache = model.new_cache(3, 12)
    steps = [model(ids[:, :4], attention_mask=mask[:, :4], cache=cache)]  # a prompt, then one token at a time
    steps += [model(ids[:, t : t + 1], attention_mask=mask[:, t : t + 1], cache=cache) for t in range(4, 12)]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=0)


def test_kv_cache_grows_past_its_first_capacity():
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    cache = model.new_cache(2, 4)
    with torch.no_grad():
        steps = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in (5, 6)]
        torch.testing.assert_close(torch.cat(steps, 1), model(ids), atol=1e-5, rtol=0)
    assert cache.length == 7 and cache.capacity >= 7


def test_linear_rope_scaling_divides_positions():
    scaled = tiny(rope_scaling={"type": "linear", "factor": 2.0})
    plain = tiny()
    positions = torch.arange(8).unsqueeze(0)
    cos_s, sin_s = scaled.rotary(positions * 2)
    cos_p, sin_p = plain.rotary(positions)
    torch.testing.assert_close(cos_s, cos_p)
    torch.testing.assert_close(sin_s, sin_p)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_embeddings": False},
        {"attn_bias": True, "mlp_bias": True},
        {"norm": "layernorm", "mlp": "gelu", "d_ff": None},
    ],
)
def test_param_counts_match_the_module(overrides):
    model = tiny(**overrides)
    counts = param_counts(model.config)
    assert counts.total == model.num_params()
    assert counts.embedding == 97 * 32


def test_flops_per_token_formula():
    config = ModelConfig(**TINY)
    counts = param_counts(config)
    expected = 6 * (counts.blocks + 97 * 32) + 12 * 2 * 32 * 16
    assert model_flops_per_token(config, 16) == expected


def test_presets_build_and_span_the_scales():
    sizes = {name: param_counts(ModelConfig(preset=name)).blocks for name in PRESETS}
    assert sizes["1m"] < sizes["10m"] < sizes["50m"] < sizes["smollm2-135m"]
    smol = param_counts(ModelConfig(preset="smollm2-135m"))
    assert smol.total == 134_515_008  # SmolLM2-135M's published size
    assert ModelConfig(preset="1m", n_layer=2).n_layer == 2


def test_heads_not_dividing_width_is_rejected():
    with pytest.raises(TinyLMError, match="n_head=5 does not divide model.d_model=32"):
        ModelConfig(**{**TINY, "n_head": 5, "n_kv_head": None})
    with pytest.raises(TinyLMError, match="unknown model preset"):
        ModelConfig(preset="nope")
