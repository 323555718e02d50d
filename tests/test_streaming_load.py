"""Streaming load: int4 layers made while the file is read equal load-then-quantise, without the fp32 model."""

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.models.components.linear import block_linears
from tinylm.models.quant import Int4Linear, Int4Quantizer, Int8Linear, quantize_int4

pytestmark = pytest.mark.usefixtures("one_thread")

# d_ff = 72 is no multiple of the kernel's tiles: gate, up and down stay fp32 on both paths.
TINY = dict(vocab_size=96, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=72, max_seq_len=32)


def saved(tmp_path, **overrides):
    torch.manual_seed(0)
    return save_model(build_model(ModelConfig(**{**TINY, **overrides})), tmp_path / "ckpt")


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "attn_bias": True}])
def test_streamed_int4_model_equals_load_then_quantize(tmp_path, overrides):
    ckpt = saved(tmp_path, **overrides)
    old = load_model(ckpt)
    old_report = quantize_int4(old)
    quantizer = Int4Quantizer()
    new = load_model(ckpt, convert=quantizer)
    assert (new.lm_head.weight is new.embed.weight) == new.config.tie_embeddings  # until finish
    assert quantizer.finish(new) == old_report
    # q/k/v fuse into one int4 layer, beside o; gate, up and down do not fit the kernel
    assert old_report.quantized == 2 * 2 and old_report.fused == 2 * 2 and len(old_report.kept) == 2 * 3
    assert isinstance(new.blocks[0].attn.qkv_proj, Int4Linear) and isinstance(new.lm_head, Int8Linear)
    kept = new.blocks[1].mlp.down_proj
    assert type(kept) is nn.Linear and kept.weight.dtype == torch.float32 and not kept.weight.is_meta
    for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randint(0, TINY["vocab_size"], (2, 12))
    with torch.no_grad():
        assert torch.equal(old(x), new(x))


def test_loaded_model_is_trainable_and_cast_like_before(tmp_path):
    ckpt = saved(tmp_path)
    model = load_model(ckpt)
    assert all(p.requires_grad and not p.is_meta for p in model.parameters())
    assert model.lm_head.weight is model.embed.weight
    half = load_model(ckpt, dtype=torch.bfloat16)
    assert {t.dtype for t in half.state_dict().values()} == {torch.bfloat16}
    assert half.rotary.inv_freq.dtype == torch.bfloat16  # buffers are cast too, as Module.to would


def test_sharded_checkpoint_streams_into_int4(tmp_path):
    ckpt = saved(tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, members in shards.items():
        save_file({n: tensors[n] for n in members}, ckpt / file, metadata={"format": "pt"})
    weight_map = {n: file for file, members in shards.items() for n in members}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    reference = load_model(ckpt)
    reference_report = quantize_int4(reference)
    (ckpt / "model.safetensors").unlink()
    quantizer = Int4Quantizer()
    model = load_model(ckpt, convert=quantizer)
    assert quantizer.finish(model) == reference_report
    for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_each_fp32_block_is_freed_once_converted(tmp_path):
    """The converter sees every block, whole, and no fp32 weight of a block it saw before is still alive:
    one block at a time."""
    ckpt = saved(tmp_path, d_ff=128)
    seen: list[weakref.ref] = []
    alive_at_each_call = []

    def watch(name: str, block: nn.Module) -> None:
        gc.collect()  # count what is still referenced, not garbage awaiting collection
        alive_at_each_call.append(sum(ref() is not None for ref in seen))
        linears = block_linears_of(block)
        assert len(linears) == 7 and all(not layer.weight.is_meta for layer in linears)
        seen.extend(weakref.ref(layer.weight) for layer in linears)
        quantizer(name, block)

    quantizer = Int4Quantizer()
    model = load_model(ckpt, convert=watch)
    assert alive_at_each_call == [0, 0]
    assert quantizer.report.quantized == 2 * 4 and quantizer.report.fused == 2 * 3  # qkv, o, gate_up, down
    assert all(isinstance(layer, Int4Linear) for layer in block_linears(model).values())


def block_linears_of(block: nn.Module) -> list[nn.Linear]:
    return [m for m in block.modules() if type(m) is nn.Linear]


PEAK = """
import re, sys, torch
import tinylm.models.llama  # imported (and compiled, without bytecode caches) before the peak is read
from tinylm.models import load_model
from tinylm.models.quant import Int4Quantizer, quantize_int4

def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

torch.set_num_threads(1)
before = peak()
if sys.argv[2] == "streamed":
    quantizer = Int4Quantizer()
    quantizer.finish(load_model(sys.argv[1], convert=quantizer))
else:
    quantize_int4(load_model(sys.argv[1]))
print(peak() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_streamed_int4_load_never_holds_the_fp32_blocks(tmp_path):
    """150 MB of fp32 block weights: loading them block by block into int4 raises the peak resident set by
    well under that (68-91 MB over environments: the int4 copy, one block's fp32 weights and their fused and
    quantised copies, the heap's and the libraries' slack), where loading the fp32 model first raises it by
    more than all of it (about 360 MB)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, d_model=384, n_layer=16, n_head=6, d_ff=1536, max_seq_len=32)
    model = build_model(config)
    fp32_bytes = sum(p.numel() * 4 for p in model.blocks.parameters())
    assert fp32_bytes > 150e6
    ckpt = save_model(model, tmp_path / "ckpt")
    del model

    def growth(mode: str) -> int:
        run = [sys.executable, "-c", PEAK, str(ckpt), mode]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        return int(subprocess.run(run, env=env, check=True, capture_output=True, text=True).stdout)

    assert growth("load-then-quantize") > fp32_bytes  # the control: the old way does hold them all
    assert growth("streamed") < 0.75 * fp32_bytes
