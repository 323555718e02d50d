"""tinylm's own CPU kernels against the torch ops they stand in for: RMSNorm, rotary, the int8 LM head,
cached attention, and a whole Llama block as one op.

(The int4 kernel is tested with the int4 layers, in test_quant.py.)"""

import copy

import pytest
import torch
import torch.nn.functional as F

from tinylm.models import kernels
from tinylm.models.components.attention import causal_mask
from tinylm.models.components.norm import RMSNorm
from tinylm.models.components.rope import RotaryEmbedding, apply_rotary
from tinylm.models.quant import Int8Linear, quantize_int4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def built():
    if kernels.ops() is None:
        pytest.skip("tinylm's CPU kernels could not be built here (they need a C++ compiler and ninja)")


def test_fused_rms_norm_matches_torch_and_only_serves_inference(built):
    norm = RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 64) * 3
    with torch.no_grad():
        fused = norm(x)
        assert torch.equal(fused[1, 2], norm(x[1, 2][None])[0])  # a row alone rounds as among others
    torch.testing.assert_close(fused, F.rms_norm(x, (64,), norm.weight, 1e-5), rtol=1e-6, atol=1e-6)
    x.requires_grad_(True)
    norm(x).sum().backward()  # with autograd on, torch's op runs, so training still has gradients
    assert x.grad is not None and norm.weight.grad is not None


def test_fused_rotary_rotates_only_the_given_heads_in_place(built):
    B, T, H, D, rotated = 2, 7, 5, 16, 3
    y = torch.randn(B, T, H, D)
    positions = torch.arange(T).expand(B, T) + torch.tensor([[0], [11]])
    cos, sin = RotaryEmbedding(D, 10000.0)(positions)
    expected = apply_rotary(y[:, :, :rotated], cos, sin, head_axis=2)
    fused = y.clone()
    torch.ops.tinylm.rope_(fused, cos, sin, rotated)
    torch.testing.assert_close(fused[:, :, :rotated], expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(fused[:, :, rotated:], y[:, :, rotated:])


def test_int8_head_kernel_is_finer_than_torchs_and_row_stable(built):
    if not kernels.vnni():
        pytest.skip("tinylm's integer matmuls need a CPU with AVX-512 VNNI")
    torch.manual_seed(0)
    weight = torch.randn(512, 128) * 0.05
    own = Int8Linear(weight, None)
    with kernels.disabled():
        theirs = Int8Linear(weight, None)
    assert own.own and not theirs.own
    x = torch.randn(5, 128)
    exact = x @ own.dequantize().T
    with torch.no_grad():
        ours, torchs = own(x), theirs(x)
        assert all(torch.equal(own(x[i : i + 1])[0], ours[i]) for i in range(len(x)))

    def relative(y: torch.Tensor) -> float:
        return ((y - exact).norm() / exact.norm()).item()

    # two int8 parts per activation (about 14 bits) against torch's bf16 (8 bits)
    assert relative(ours) < 1e-4 < relative(torchs) < 1e-2


def test_cached_attention_matches_sdpa_and_reads_each_query_alone(built):
    torch.manual_seed(0)
    B, H, Hkv, T, S, D = 2, 6, 2, 5, 35, 32  # keys 16-30 in a group of 16 for some queries, alone for others
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, D)
    allowed = torch.ones(B, 1, T, S, dtype=torch.bool).tril(S - T)
    allowed[1, :, :, :4] = False  # a left-padded row
    fused = torch.ops.tinylm.cached_attention(q, k, v, allowed, D**-0.5)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    causal = torch.ops.tinylm.cached_attention(q, k, v, None, D**-0.5)  # no mask: causal, queries last
    torch.testing.assert_close(causal[0], fused[0])
    for t in range(T):  # query t alone over the keys up to its own position: the same bits
        end = S - T + t + 1
        alone = torch.ops.tinylm.cached_attention(
            q[:, :, t : t + 1], k[:, :, :end], v[:, :, :end], None, D**-0.5
        )
        assert torch.equal(alone[0, :, 0], causal[0, :, t])


@pytest.mark.parametrize("bias", [False, True], ids=["llama", "qwen2-biases"])
def test_llama_block_op_is_bitwise_the_modules_it_replaces(built, random_llama, bias):
    if not kernels.vnni():
        pytest.skip("the int4 layers the block op reads need a CPU with AVX-512 VNNI")
    model = random_llama(d_model=64, n_head=4, n_kv_head=2, d_ff=96, attn_bias=bias)
    quantize_int4(model)
    B, past, T = 2, 7, 3
    cache = model.new_cache(B, 16)
    padding = torch.ones(B, past, dtype=torch.long)
    padding[1, :2] = 0  # a left-padded row
    with torch.inference_mode():
        model(torch.randint(0, 101, (B, past)), attention_mask=padding, cache=cache)
        cache.extend_mask(torch.ones(B, T, dtype=torch.long))
        mask = causal_mask(cache.mask[:, : past + T], past, T)
        rotary = model.rotary(torch.arange(past, past + T).expand(B, T))
        x = torch.randn(B, T, 64)
        block, theirs = model.blocks[1], copy.deepcopy(cache)
        assert block._kernel_args(x, rotary, mask, cache) is not None
        fused = block(x, rotary, mask, cache)
        h = x + block.attn(block.attn_norm(x), mask, rotary=rotary, cache=theirs)
        modules = h + block.mlp(block.mlp_norm(h))
    assert torch.equal(fused, modules)
    assert torch.equal(cache.keys, theirs.keys) and torch.equal(cache.values, theirs.values)
    cache.keep([0])  # the first new token of the unpadded row again, alone: the same bits
    cache.length = past
    with torch.inference_mode():
        assert torch.equal(block(x[:1, :1], [r[:1, :1] for r in rotary], None, cache), fused[:1, :1])


def test_kernels_give_the_same_bits_on_one_thread_or_two(built, random_llama):
    """The ops split their rows, tiles or queries over OpenMP threads, each output computed by one thread in
    a fixed order, so the thread count must not change a bit (a server and a benchmark may differ in it)."""
    if not kernels.vnni():
        pytest.skip("the int4 layers need a CPU with AVX-512 VNNI")
    model = random_llama(d_model=64, n_head=4, n_kv_head=2, d_ff=96)
    quantize_int4(model)
    ids = torch.randint(0, 101, (2, 12))

    def logits_of_a_step() -> torch.Tensor:
        cache = model.new_cache(2, 16)
        with torch.inference_mode():
            model(ids, cache=cache)
            return model(ids[:, :3], attention_mask=torch.ones(2, 3), cache=cache)

    one = logits_of_a_step()
    torch.set_num_threads(2)  # the fixture sets 1 and restores the count afterwards
    assert torch.equal(logits_of_a_step(), one)
