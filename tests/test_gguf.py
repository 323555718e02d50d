"""GGUF import: tiny files written with gguf.GGUFWriter, bad files, and the real SmolLM2-135M-Instruct."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize
from tokenizers import Tokenizer

from tinylm.cli import main
from tinylm.data import read_documents
from tinylm.errors import TinyLMError
from tinylm.interop.gguf import import_gguf
from tinylm.models import Backbone, ModelConfig, build_model
from tinylm.models.checkpoint import load_model

transformers = pytest.importorskip("transformers")
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BYTES = list(bytes_to_unicode().values())
MERGES = ["Ġ t", "h e", "Ġt he", "l l", "he ll"]
TOKENS = SPECIALS + BYTES + [m.replace(" ", "") for m in MERGES]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
CONFIG = dict(vocab_size=len(TOKENS), d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=96, max_seq_len=128)
# llama.cpp's names for our parameters, per layer and at the top level.
GGUF_NAMES = {
    "attn_norm": "attn_norm",
    "attn.q_proj": "attn_q",
    "attn.k_proj": "attn_k",
    "attn.v_proj": "attn_v",
    "attn.o_proj": "attn_output",
    "mlp_norm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(name: str) -> str:
    top = {"embed.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    if name in top or name == "lm_head.weight":
        return top.get(name, "output.weight")
    _, i, rest = name.split(".", 2)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{GGUF_NAMES[module]}.{kind}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's q/k permutation (what the import has to undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(
    path: Path, model: Backbone, qtype: Q, arch: str = "llama", skip=(), raw_override=None
) -> Backbone:
    """Write `model` as llama.cpp would (matrices in `qtype`, vectors in F32) and return the model
    holding the weights the file really stores (after quantisation), which the import must reproduce."""
    c = model.config
    writer = GGUFWriter(path, arch)
    for key, value in {
        "block_count": c.n_layer,
        "context_length": c.max_seq_len,
        "embedding_length": c.d_model,
        "feed_forward_length": c.d_ff,
        "attention.head_count": c.n_head,
        "attention.head_count_kv": c.n_kv_head,
        "rope.dimension_count": c.head_dim,
    }.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", c.rope_theta)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(TOKENS) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template(TEMPLATE)
    stored = build_model(c).eval()
    heads = {"attn.q_proj.weight": c.n_head, "attn.k_proj.weight": c.n_kv_head}
    for (name, p), target in zip(model.named_parameters(), stored.parameters(), strict=True):
        w = p.detach().numpy()
        kind = Q.F32 if w.ndim == 1 else qtype
        data = (
            quantize(w, kind)
            if kind not in (Q.F32, Q.F16)
            else w.astype(np.float16 if kind == Q.F16 else np.float32)
        )
        with torch.no_grad():
            target.copy_(torch.from_numpy(dequantize(data, kind).reshape(w.shape).copy()))
        module = name.split(".", 2)[-1]
        if arch == "llama" and module in heads:
            data = permute(data, heads[module])
        if gguf_name(name) in skip:
            continue
        raw = raw_override if raw_override and w.ndim == 2 else kind
        writer.add_tensor(gguf_name(name), data, raw_dtype=raw if raw not in (Q.F32, Q.F16) else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def random_model(**overrides) -> Backbone:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**CONFIG, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_import_dequantises_and_unpermutes(qtype, tmp_path):
    stored = write_gguf(tmp_path / "m.gguf", random_model(), qtype)
    import_gguf(str(tmp_path / "m.gguf"), out=str(tmp_path / "ckpt"))
    imported = load_model(tmp_path / "ckpt")
    assert imported.config.tie_embeddings and imported.config.n_kv_head == 2
    for (name, a), b in zip(imported.named_parameters(), stored.parameters(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(imported(ids), stored(ids))


def test_qwen2_with_biases_and_untied_head(tmp_path):
    stored = write_gguf(
        tmp_path / "q.gguf", random_model(attn_bias=True, tie_embeddings=False), Q.Q8_0, "qwen2"
    )
    import_gguf(str(tmp_path / "q.gguf"), out=str(tmp_path / "ckpt"))
    imported = load_model(tmp_path / "ckpt")
    assert imported.config.attn_bias and not imported.config.tie_embeddings
    for (name, a), b in zip(imported.named_parameters(), stored.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_tokenizer_is_rebuilt_from_metadata(tmp_path):
    write_gguf(tmp_path / "m.gguf", random_model(), Q.F32)
    import_gguf(str(tmp_path / "m.gguf"), out=str(tmp_path / "ckpt"))
    tok = Tokenizer.from_file(str(tmp_path / "ckpt" / "tokenizer.json"))
    ids = tok.encode("<|im_start|>hello the 42").ids
    assert ids[0] == 1 and TOKENS[ids[1]] == "hell"
    assert ids[-2:] == [TOKENS.index("4"), TOKENS.index("2")]  # smollm splits digits one by one
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>hello the 42"
    config = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>" and config["chat_template"] == TEMPLATE
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    assert hf_tok.eos_token_id == 2 and hf_tok("hello the")["input_ids"] == tok.encode("hello the").ids
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["eos_token_id"] == 2


def test_unsupported_tensor_type_via_cli(tmp_path, capsys):
    write_gguf(tmp_path / "m.gguf", random_model(), Q.Q4_0, raw_override=Q.IQ4_NL)  # same block size
    argv = ["import", "gguf", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "ckpt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has type IQ4_NL, which tinylm cannot dequantise" in err and "Traceback" not in err
    assert not (tmp_path / "ckpt").exists()


def test_unsupported_architecture_via_cli(tmp_path, capsys):
    write_gguf(tmp_path / "m.gguf", random_model(), Q.F32, arch="mamba")
    argv = ["import", "gguf", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "ckpt")]
    assert main(argv) == 2
    assert "architecture 'mamba' is not supported" in capsys.readouterr().err


def test_missing_tensor_and_junk_file(tmp_path):
    write_gguf(tmp_path / "m.gguf", random_model(), Q.F32, skip={"blk.1.ffn_up.weight"})
    with pytest.raises(TinyLMError, match="lacks tensor 'blocks.1.mlp.up_proj.weight'"):
        import_gguf(str(tmp_path / "m.gguf"), out=str(tmp_path / "ckpt"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(TinyLMError, match="not a readable GGUF file"):
        import_gguf(str(tmp_path / "junk.gguf"), out=str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt").exists()


# --- The real checkpoint -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, smollm2_checkpoint):
    """(our imported model, its tokenizer via transformers, transformers' own load of the same GGUF)."""
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_checkpoint, local_files_only=True)
    return load_model(smollm2_checkpoint), tokenizer, theirs.eval()


def greedy(model: Backbone, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding through the KV cache: the prompt in one pass, then one token per step."""
    cache = model.new_cache(1, len(prompt) + n)
    logits = model(torch.tensor([prompt]), cache=cache)
    out: list[int] = []
    for _ in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits = model(torch.tensor([[out[-1]]]), cache=cache)
    return out


@pytest.mark.slow
def test_smollm2_greedy_generation_matches_transformers(smollm2, smollm2_gguf):
    ours, tokenizer, theirs = smollm2
    prompts = [
        tokenizer("The capital of France is")["input_ids"],
        tokenizer("def fibonacci(n):")["input_ids"],
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "请用一句话介绍长城。"}], add_generation_prompt=True
        ),
    ]
    gguf_tok = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    assert (
        gguf_tok("The capital of France is 2024")["input_ids"]
        == tokenizer("The capital of France is 2024")["input_ids"]
    )
    with torch.no_grad():
        for prompt in prompts:
            prompt = list(prompt if isinstance(prompt, list) else prompt["input_ids"])
            expected = theirs.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
            expected = expected[0, len(prompt) :].tolist()
            if len(expected) < 32:  # transformers stops at EOS; our loop runs on
                assert expected[-1] == tokenizer.eos_token_id
            assert greedy(ours, prompt, 32)[: len(expected)] == expected, tokenizer.decode(prompt)


@pytest.mark.slow
def test_smollm2_perplexity_matches_transformers(smollm2):
    ours, tokenizer, theirs = smollm2
    text = next(read_documents("shakespeare"))[20_000:22_000]
    ids = torch.tensor([tokenizer(text)["input_ids"][:400]])
    with torch.no_grad():
        nll = [
            torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
            for logits in (ours(ids), theirs(ids).logits)
        ]
    ppl_ours, ppl_theirs = math.exp(nll[0]), math.exp(nll[1])
    assert abs(ppl_ours - ppl_theirs) / ppl_theirs < 1e-3
    assert ppl_ours < 100  # a sane language model on Shakespeare, not merely equal garbage
