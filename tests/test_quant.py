"""Int4 weights: exact Q4_1 round trip, the kernel against a dequantized matmul, engine and CLI use, SmolLM2."""

import math

import pytest
import torch
from torch import nn

from tinylm.cli import main
from tinylm.infer import Engine, SamplingParams
from tinylm.models import ModelConfig, build_model, kernels, load_model
from tinylm.models.components.linear import convert_linears
from tinylm.models.quant import (
    DENSE_ROWS,
    Int4Linear,
    Int4Weights,
    Int8Linear,
    quantize_int4,
)
from tinylm.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def q4_1_matrix(rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight as a Q4_1 GGUF stores it (fp16 scale and minimum per 32 inputs; q spanning 0..15), and its q."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, cols), generator=g, dtype=torch.int32)
    q[:, ::32], q[:, 1::32] = 0, 15  # llama.cpp's quantizer maps each block's min to 0 and max to 15
    scale = (torch.rand(rows, cols // 32, generator=g) * 0.01 + 1e-3).half().float()
    minimum = (-torch.rand(rows, cols // 32, generator=g) * 0.1).half().float()
    weight = (q.reshape(rows, -1, 32) * scale[..., None] + minimum[..., None]).reshape(rows, cols)
    return weight, q


def test_requantizing_q4_1_weights_recovers_their_integers_exactly():
    weight, q = q4_1_matrix(48, 96)
    int4 = Int4Weights.quantize(weight)
    assert torch.equal(int4.q, q)
    assert torch.equal(int4.dequantize(), weight)


def test_quantizing_other_weights_rounds_to_the_nearest_level():
    weight = torch.randn(32, 64)
    int4 = Int4Weights.quantize(weight)
    assert int4.q.min() >= 0 and int4.q.max() <= 15
    step = int4.scale.repeat_interleave(32, dim=1)
    assert ((int4.dequantize() - weight).abs() <= step / 2 + 1e-6).all()


@pytest.fixture(params=["own", "torch"])
def kernel(request, monkeypatch) -> str:
    """Int4 layers built with tinylm's own kernel (where this machine builds it), or with torch's."""
    if request.param == "torch":
        monkeypatch.setenv("TINYLM_KERNELS", "0")
    elif not kernels.vnni():
        pytest.skip("tinylm's int4 kernel is unavailable here (it needs a C++ compiler and AVX-512 VNNI)")
    return request.param


def test_int4_linear_matches_a_matmul_with_the_dequantized_weight(kernel):
    weight, _ = q4_1_matrix(64, 96)
    bias = torch.randn(64)
    layer = Int4Linear(Int4Weights.quantize(weight), bias)
    assert layer.own == (kernel == "own")
    x = torch.randn(2, 5, 96)
    expected = nn.functional.linear(x, weight, bias)
    # int8 (own) or bf16 (torch's) activations and bf16 scales: about 2-3 significant digits.
    assert layer(x).shape == (2, 5, 64)
    torch.testing.assert_close(layer(x), expected, rtol=2e-2, atol=2e-2)


def test_each_row_is_computed_alike_alone_or_among_others(kernel):
    """Speculative decoding's greedy identity rests on this: verifying k drafts in one call must round each
    row exactly as k one-row decode steps do."""
    weight, _ = q4_1_matrix(64, 96)
    layer = Int4Linear(Int4Weights.quantize(weight), None)
    for rows in (2, 3, 7):  # the kernel takes rows in blocks of up to 4: every block size, and a block plus 3
        x = torch.randn(rows, 96)
        together = layer(x)
        assert all(torch.equal(layer(x[i : i + 1])[0], together[i]) for i in range(rows))


def test_own_layout_round_trips_integers_scales_and_minimums():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (48, 128), generator=g, dtype=torch.int32)
    scale, minimum = torch.rand(48, 4, generator=g), -torch.rand(48, 4, generator=g)
    packed, s, m = kernels.pack_int4(q, scale, minimum)
    assert packed.shape == (3, 4, 256) and packed.dtype == torch.uint8
    assert torch.equal(kernels.unpack_int4(packed).int(), q)
    assert torch.equal(kernels.unpack_scales(s), scale.bfloat16().float())
    assert torch.equal(kernels.unpack_scales(m), minimum.bfloat16().float())


def test_a_prompt_of_many_rows_agrees_with_one_row_at_a_time(kernel):
    """A prefill's many rows take another path than decoding's few (a dense matmul with the unpacked weight
    where torch's kernel would reread the weights per row); both compute the same layer."""
    weight, _ = q4_1_matrix(64, 96)
    layer = Int4Linear(Int4Weights.quantize(weight), torch.randn(64))
    # The unpacked integers with the bf16 scales: the Q4_1 weight up to bf16 rounding.
    torch.testing.assert_close(layer.dequantize(), weight, rtol=1e-2, atol=1e-2)
    x = torch.randn(DENSE_ROWS + 3, 96)
    many = layer(x)
    torch.testing.assert_close(
        many, nn.functional.linear(x, layer.dequantize(), layer.bias), rtol=2e-2, atol=2e-2
    )
    one_at_a_time = torch.cat([layer(row[None]) for row in x])
    torch.testing.assert_close(many, one_at_a_time, rtol=2e-2, atol=2e-2)


def test_a_long_prompt_on_amx_reads_the_weight_unpacked_to_bf16(monkeypatch):
    if not kernels.vnni():
        pytest.skip("tinylm's int4 kernel is unavailable here (it needs a C++ compiler and AVX-512 VNNI)")
    weight, _ = q4_1_matrix(64, 96)
    layer = Int4Linear(Int4Weights.quantize(weight), torch.randn(64))
    unpacked = torch.ops.tinylm.int4_to_bf16(layer.packed, layer.scale, layer.minimum)
    assert unpacked.dtype == torch.bfloat16
    torch.testing.assert_close(unpacked.float(), layer.dequantize().bfloat16().float(), rtol=2**-7, atol=1e-6)
    x = torch.randn(DENSE_ROWS, 96)
    for amx in (True, False):  # the bf16 matmul, or the integer kernel: the same layer
        monkeypatch.setattr(kernels, "amx", lambda amx=amx: amx)
        torch.testing.assert_close(
            layer(x), nn.functional.linear(x, layer.dequantize(), layer.bias), rtol=2e-2, atol=2e-2
        )


def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=256, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=32
    )
    return build_model(config).eval()


def test_fused_int4_projections_compute_what_the_separate_layers_compute():
    fused, separate = tiny_llama(), tiny_llama()
    x = torch.randint(0, 256, (2, 12))
    mask = torch.ones_like(x)
    mask[1, :5] = 0  # left padding: the fused path must keep positions and masks right
    report = quantize_int4(fused)
    convert_linears(separate, lambda _, m: Int4Linear(Int4Weights.quantize(m.weight), m.bias))
    assert report.fused == 2 * 3 and isinstance(fused.blocks[1].mlp.gate_up_proj, Int4Linear)
    with torch.no_grad():
        h_fused, h_separate = fused.hidden(x, mask), separate.hidden(x, mask)
    # The same integers and the same bf16 inputs: equal up to the order of float sums.
    torch.testing.assert_close(h_fused, h_separate, rtol=1e-4, atol=1e-4)


def test_int8_head_keeps_the_greedy_tokens_of_the_fp32_head():
    model = tiny_llama()
    x = torch.randint(0, 256, (4, 16))
    with torch.no_grad():
        hidden = model.hidden(x)
        head = Int8Linear(model.lm_head.weight, None)
        exact, approx = model.lm_head(hidden), head(hidden)
    assert head.q.dtype == torch.int8 and (head.dequantize() - model.lm_head.weight).abs().max() < 1e-3
    assert (exact.argmax(-1) == approx.argmax(-1)).float().mean() >= 0.95
    assert (exact - approx).abs().max() < 0.05 * exact.abs().max()


def test_int8_head_quantises_in_row_blocks_and_leaves_the_tied_table_alone(monkeypatch):
    model = tiny_llama()
    table = model.embed.weight.detach().clone()
    whole = Int8Linear(table, None)  # one block of 4096 rows holds all 256
    monkeypatch.setattr(Int8Linear, "ROWS", 100)  # three blocks, the last one short
    report = quantize_int4(model)
    assert torch.equal(model.embed.weight, table)  # the head's int8 copy did not write into the embedding
    assert torch.equal(model.lm_head.q, whole.q) and torch.equal(model.lm_head.scale, whole.scale)
    assert report.head_max_error == (whole.dequantize() - table).abs().max().item()


def test_quantize_int4_replaces_block_linears_and_keeps_shapes_the_kernel_cannot_hold():
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=128, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=72, max_seq_len=32
    )
    model = build_model(config).eval()
    x = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        before = model(x)
        report = quantize_int4(model)
        after = model(x)
    # d_ff = 72 is no multiple of 16, so gate and up stay fp32 and unfused; down (in 72) is no multiple of 32.
    # q/k/v fuse into one layer.
    assert (report.quantized, report.fused) == (2 * 2, 2 * 2)
    assert sorted(report.kept) == [
        f"blocks.{i}.mlp.{n}" for i in (0, 1) for n in ("down_proj", "gate_proj", "up_proj")
    ]
    assert isinstance(model.blocks[0].attn.qkv_proj, Int4Linear)
    assert not hasattr(model.blocks[0].attn, "q_proj")
    assert isinstance(model.lm_head, Int8Linear) and isinstance(model.embed, nn.Embedding)
    assert report.max_error > 0 and report.int4_bytes < report.fp32_bytes / 4
    assert (after - before).abs().mean() < 0.1 * before.abs().mean()


def test_int4_engine_batches_exactly_and_the_cli_reports_quantization(tiny_checkpoint, capsys):
    ckpt = tiny_checkpoint
    engine = Engine.load(ckpt, max_batch_size=2, quantize="int4")
    assert (engine.quantization.quantized, engine.quantization.fused) == (2 * 4, 2 * 3)
    prompts = ["To be", "床前明月光", "The quick brown fox jumps"]
    params = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True)
    batched = engine.generate(prompts, params)
    for prompt, seq in zip(prompts, batched, strict=True):
        assert seq.token_ids == engine.generate([prompt], params)[0].token_ids
    generate = ["generate", "--model", str(ckpt), "--prompt", "To be", "--sampling.max_new_tokens", "4"]
    assert main([*generate, "--quantize", "int4"]) == 0
    assert "int4 weights: 8 linear layers (6 more fused into them)" in capsys.readouterr().err
    assert main(["generate", "--model", str(ckpt), "--prompt", "x", "--quantize", "int3"]) == 2
    assert "quantize: expected one of 'none', 'int4', got 'int3'" in capsys.readouterr().err


def test_smollm2_from_q4_1_gguf_quantizes_losslessly(smollm2_checkpoint):
    model, tokenizer_dir = load_model(smollm2_checkpoint), smollm2_checkpoint
    text = "Now is the winter of our discontent made glorious summer by this sun of York; " * 3
    ids = torch.tensor([Tokenizer.load(tokenizer_dir).encode(text)])
    with torch.no_grad():
        logits = model(ids[:, :-1])[0]
        report = quantize_int4(model)
        logits_int4 = model(ids[:, :-1])[0]
    assert (report.quantized, report.fused, report.kept) == (30 * 4, 30 * 3, [])
    assert report.max_error == 0.0  # the GGUF's Q4_1 integers, recovered exactly
    assert report.head_max_error < 0.01  # int8 with a scale per row; the embedding is a Q8_0 in the GGUF
    # Only the bf16 rounding of activations differs: the same predictions, nearly the same perplexity.
    assert (logits.argmax(-1) == logits_int4.argmax(-1)).float().mean() >= 0.9
    ppl, ppl_int4 = (
        math.exp(nn.functional.cross_entropy(x, ids[0, 1:]).item()) for x in (logits, logits_int4)
    )
    assert ppl_int4 == pytest.approx(ppl, rel=2e-2)
