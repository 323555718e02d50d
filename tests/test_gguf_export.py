"""GGUF export: round trips through our own import (exact, F16, block-exact quantisation), refusals, the real
SmolLM2 file coming back byte for byte, and llama.cpp (when llama-cpp-python is installed) agreeing with us."""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize, quantize

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.infer.engine import Engine
from tinylm.infer.sampling import SamplingParams
from tinylm.interop.gguf import import_gguf
from tinylm.interop.gguf_export import export_gguf
from tinylm.models import ModelConfig, build_model, load_model, save_model
from tinylm.tokenizer import Tokenizer

MIXED = "<|im_start|>user\nTo be, or not 42 to be?<|im_end|>\n床前明月光 <|endoftext|> the end"


@pytest.fixture(scope="module")
def tokenizer_dir(checkpoint_factory, tmp_path_factory) -> Path:
    """A real byte-level BPE tokenizer (300 tokens, our special tokens and chat template)."""
    root = tmp_path_factory.mktemp("gguf_export_tok")
    checkpoint_factory(root)
    return root / "tok"


def random_checkpoint(root: Path, tokenizer_dir: Path, **overrides) -> Path:
    """A 2-block decoder whose every parameter (norms and biases too) is random, saved with the tokenizer."""
    config = dict(vocab_size=300, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=96)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**config, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return save_model(model, root / "ckpt", tokenizer_dir)


def round_trip(ckpt: Path, tmp_path: Path, kind: str):
    """(our model, the model that `export gguf --type kind` then `import gguf` gives back)."""
    export_gguf(str(ckpt), str(tmp_path / "m.gguf"), kind)
    import_gguf(str(tmp_path / "m.gguf"), str(tmp_path / "back"))
    return load_model(ckpt), load_model(tmp_path / "back")


SHAPES = {
    "llama": {},
    "qwen2-untied-linear-rope": dict(
        attn_bias=True, tie_embeddings=False, rope_theta=5e5, norm_eps=1e-6, rope_scaling={"type": "linear", "factor": 2.0}
    ),
}  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_f32_round_trip_is_exact(shape, tokenizer_dir, tmp_path):
    ckpt = random_checkpoint(tmp_path, tokenizer_dir, **SHAPES[shape])
    ours, back = round_trip(ckpt, tmp_path, "f32")
    # Initialisation scale and dropout are training settings a GGUF has no key for; the rest comes back.
    assert dataclasses.replace(back.config, init_std=ours.config.init_std) == ours.config
    assert back.state_dict().keys() == ours.state_dict().keys()
    for name, w in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], w), name
    tok, tok_back = Tokenizer.load(ckpt), Tokenizer.load(tmp_path / "back")
    assert tok_back.encode(MIXED) == tok.encode(MIXED) and tok.encode(MIXED).count(tok.eos_id) == 1
    assert tok_back.chat_template == tok.chat_template
    chat = [{"role": "user", "content": "hi"}]
    assert tok_back.apply_chat_template(chat, True) == tok.apply_chat_template(chat, True)
    assert (tok_back.eos_id, tok_back.bos_id, tok_back.pad_id) == (tok.eos_id, tok.bos_id, tok.pad_id)


def test_f16_stores_half_precision_matrices_and_f32_vectors(tokenizer_dir, tmp_path):
    ours, back = round_trip(random_checkpoint(tmp_path, tokenizer_dir, attn_bias=True), tmp_path, "f16")
    for name, w in ours.state_dict().items():
        expected = w if w.ndim == 1 else w.half().float()
        assert torch.equal(back.state_dict()[name], expected), name
    types = {t.name: t.tensor_type for t in GGUFReader(tmp_path / "m.gguf").tensors}
    assert types["blk.0.attn_q.bias"] == types["blk.0.attn_norm.weight"] == Q.F32
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == Q.F16


def gguf_stored(w: np.ndarray, qtype: Q) -> torch.Tensor:
    """What the gguf package's own quantiser keeps of `w` (a [rows, columns] matrix)."""
    return torch.from_numpy(dequantize(quantize(w, qtype), qtype).reshape(w.shape).copy())


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_1"])
def test_quantised_weights_are_block_exact(kind, tokenizer_dir, tmp_path):
    ours, back = round_trip(random_checkpoint(tmp_path, tokenizer_dir), tmp_path, kind)
    qtype = Q[kind.upper()]
    for name, w in ours.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: the same tensor as embed.weight
        head = name == "embed.weight" and kind != "q8_0"  # a 4-bit file keeps its (tied) head at Q8_0
        expected = w if w.ndim == 1 else gguf_stored(w.numpy(), Q.Q8_0 if head else qtype)
        assert torch.equal(back.state_dict()[name], expected), name


def test_rows_that_do_not_fill_blocks_fall_back_to_f16(tokenizer_dir, tmp_path, capsys):
    ours, back = round_trip(random_checkpoint(tmp_path, tokenizer_dir, d_ff=80), tmp_path, "q8_0")
    assert "kept 2 matrices at F16" in capsys.readouterr().out  # ffn_down's rows are 80 wide, in 2 blocks
    types = {t.name: t.tensor_type for t in GGUFReader(tmp_path / "m.gguf").tensors}
    assert types["blk.1.ffn_down.weight"] == Q.F16 and types["blk.1.ffn_up.weight"] == Q.Q8_0
    down = "blocks.1.mlp.down_proj.weight"
    assert torch.equal(back.state_dict()[down], ours.state_dict()[down].half().float())


# --- Refusals ------------------------------------------------------------------------------------------


def test_refuses_families_and_shapes_llama_cpp_lacks(tokenizer_dir, tmp_path):
    bert = save_model(
        build_model(ModelConfig(family="bert", vocab_size=300, d_model=32, n_layer=1, n_head=2)),
        tmp_path / "bert",
        tokenizer_dir,
    )
    with pytest.raises(TinyLMError, match="family 'bert' has no GGUF export"):
        export_gguf(str(bert), str(tmp_path / "b.gguf"))
    prefix = random_checkpoint(tmp_path / "p", tokenizer_dir, prefix_lm=True)
    with pytest.raises(TinyLMError, match="model.prefix_lm=True has no llama.cpp equivalent"):
        export_gguf(str(prefix), str(tmp_path / "p.gguf"))
    assert not list(tmp_path.glob("*.gguf*"))


def test_refuses_a_tokenizer_that_is_not_byte_level_bpe(tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    ckpt = random_checkpoint(tmp_path, tokenizer_dir)
    vocab = {t: i for i, t in enumerate(["[UNK]", "<|endoftext|>", *"abcdefghij"])}
    wordpiece = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(ckpt / "tokenizer.json"))
    with pytest.raises(TinyLMError, match="is not a byte-level BPE tokenizer llama.cpp knows"):
        export_gguf(str(ckpt), str(tmp_path / "m.gguf"))
    assert not list(tmp_path.glob("*.gguf*"))


def test_existing_file_needs_overwrite_via_cli(tokenizer_dir, tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path, tokenizer_dir)
    (tmp_path / "m.gguf").write_bytes(b"keep me")
    argv = ["export", "gguf", str(ckpt), "--out", str(tmp_path / "m.gguf"), "--type", "q8_0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err and "Traceback" not in err
    assert (tmp_path / "m.gguf").read_bytes() == b"keep me"
    assert main([*argv, "--overwrite", "true"]) == 0
    assert GGUFReader(tmp_path / "m.gguf").get_field("general.file_type").contents() == 7  # MOSTLY_Q8_0


def test_a_failed_export_leaves_the_old_file_untouched(tokenizer_dir, tmp_path, monkeypatch):
    from gguf import GGUFWriter

    ckpt = random_checkpoint(tmp_path, tokenizer_dir)
    (tmp_path / "m.gguf").write_bytes(b"the old file")

    def header_then_crash(writer, **_):
        writer.write_ti_data_to_file()  # header, metadata and tensor table are on disk by now
        raise OSError("disk full")

    monkeypatch.setattr(GGUFWriter, "write_tensors_to_file", header_then_crash)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(str(ckpt), str(tmp_path / "m.gguf"), "q4_0", overwrite=True)
    assert (tmp_path / "m.gguf").read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.gguf"]  # no temporary file left


# --- The real checkpoint -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_q4_1(smollm2_checkpoint, tmp_path_factory) -> Path:
    return export_gguf(
        str(smollm2_checkpoint), str(tmp_path_factory.mktemp("smollm2_q4_1") / "m.gguf"), "q4_1"
    )


@pytest.mark.slow
def test_smollm2_comes_back_as_the_same_q4_1_file(smollm2_gguf, smollm2_q4_1):
    """Our checkpoint holds SmolLM2's Q4_1 blocks dequantised; quantising them again is lossless."""
    original, ours = GGUFReader(smollm2_gguf), GGUFReader(smollm2_q4_1)
    theirs = {t.name: t for t in ours.tensors}
    assert theirs.keys() == {t.name for t in original.tensors}
    for t in original.tensors:
        assert theirs[t.name].tensor_type == t.tensor_type, t.name  # Q4_1 blocks, Q8_0 head, F32 norms
        assert np.array_equal(theirs[t.name].data, t.data), t.name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.pre",
                "tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "llama.rope.freq_base"):  # fmt: skip
        assert ours.get_field(key).contents() == original.get_field(key).contents(), key


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_llama_cpp_generates_what_tinylm_generates(kind, smollm2_checkpoint, tmp_path):
    """With float weights llama.cpp computes what tinylm computes, so greedy tokens must agree. With q8_0 or
    q4_1 weights it also rounds the activations to 8 bits, and greedy paths part after a few tokens
    (benchmarks/gguf_llama_cpp.py prints how many agree)."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: `pip install llama-cpp-python` to run it"
    )
    path = export_gguf(str(smollm2_checkpoint), str(tmp_path / "m.gguf"), kind)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
    engine = Engine.load(smollm2_checkpoint)
    greedy = SamplingParams(max_new_tokens=32, temperature=0, ignore_eos=True)
    for prompt in PROMPTS:
        ids = engine.tokenizer.encode(prompt)
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
        ours = engine.generate([ids], greedy)[0].token_ids
        llm.reset()
        theirs = list(itertools.islice(llm.generate(ids, temp=0.0, top_k=1), 32))
        assert theirs == ours, prompt
