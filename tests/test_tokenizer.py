"""Tokenizer: exact round trips, agreement with `transformers`, imported tokenizers, Chinese efficiency."""

from __future__ import annotations

import itertools
import json
import lzma
import re
import shutil

import pytest
import yaml
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tinylm.cli import main
from tinylm.data import CORPORA
from tinylm.data.bpe import train_tokenizer
from tinylm.errors import TinyLMError
from tinylm.tokenizer import SPECIAL_TOKENS, Tokenizer

TEXTS = [
    "To be, or not to be: that is the question.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "Mixed 中文 and English, 1234567 digits, emoji 🙂👩‍👩‍👧‍👦🇯🇵 and 𠀀 (CJK ext. B).",
    "   leading spaces, runs    of   spaces\t\ttabs\n\n\n\nnewlines\r\nand CRLF, trailing   ",
    "e\u0301 (not NFC), zero\u200bwidth, \ufffd, nul\x00, \U0010ffff",
    "specials as text: <|endoftext|><|im_start|>user\nhi<|im_end|>",
    "",
]
CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "什么是 BPE?"},
    {"role": "assistant", "content": "Byte pair encoding 🙂"},
    {"role": "user", "content": "Thanks!"},
]
# SmolLM2-135M-Instruct's tokenizer_config.json (special tokens and chat template), to test imported tokenizers.
SMOLLM2_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer",
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    "clean_up_tokenization_spaces": False,
    "model_max_length": 8192,
    "chat_template": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return Tokenizer.load(tiny_tokenizer_dir)


def test_special_tokens_are_reserved_first(tok, tiny_tokenizer_dir):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.eos_id, tok.bos_id, tok.pad_id, tok.vocab_size) == (0, 1, 2, 1024)
    config = yaml.safe_load((tiny_tokenizer_dir / "config.yaml").read_text())
    assert config["vocab_size"] == 1024 and config["data"].endswith("tiny_corpus0")


@pytest.mark.parametrize("text", TEXTS)
def test_exact_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, special=False)) == text


def test_special_strings_in_data_stay_text(tok):
    assert tok.encode("a<|endoftext|>b")[1] == tok.eos_id
    assert tok.eos_id not in tok.encode("a<|endoftext|>b", special=False)
    assert tok.encode_batch(TEXTS, special=False) == [tok.encode(t, special=False) for t in TEXTS]


def test_transformers_loads_and_agrees(tok, tiny_tokenizer_dir):
    hf = PreTrainedTokenizerFast.from_pretrained(tiny_tokenizer_dir)
    auto = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for text in TEXTS:
        assert hf.encode(text) == auto.encode(text) == tok.encode(text)
        assert hf.decode(tok.encode(text)) == text
    assert (hf.eos_token_id, hf.bos_token_id, hf.pad_token_id) == (tok.eos_id, tok.bos_id, tok.pad_id)
    for prompt in (False, True):
        rendered = tok.apply_chat_template(CHAT, add_generation_prompt=prompt)
        assert rendered == hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=prompt)
        assert tok.encode(rendered) == hf.apply_chat_template(
            CHAT, add_generation_prompt=prompt, return_dict=False
        )
    assert tok.apply_chat_template(CHAT[:2], add_generation_prompt=True) == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\n什么是 BPE?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_imported_smollm2_style_tokenizer(tmp_path, tiny_tokenizer_dir):
    """Special tokens come from tokenizer_config.json, not from our names: SmolLM2's EOS is <|im_end|>."""
    shutil.copy(tiny_tokenizer_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    tok = Tokenizer.load(tmp_path)
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|im_end|>", "<|im_start|>", "<|im_end|>")
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (4, 3, 4)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    user_only = CHAT[1:2]
    assert tok.apply_chat_template(user_only, True) == hf.apply_chat_template(
        user_only, tokenize=False, add_generation_prompt=True
    )
    assert "named SmolLM" in tok.apply_chat_template(user_only)


def test_save_keeps_hash_and_transformers_saved_dir_loads(tmp_path, tok, tiny_tokenizer_dir):
    tok.save(tmp_path / "copy")
    copy = Tokenizer.load(tmp_path / "copy")
    assert copy.hash == tok.hash and copy.apply_chat_template(CHAT) == tok.apply_chat_template(CHAT)
    # transformers 5 saves the template as chat_template.jinja; we read that too.
    PreTrainedTokenizerFast.from_pretrained(tiny_tokenizer_dir).save_pretrained(tmp_path / "hf")
    from_hf = Tokenizer.load(tmp_path / "hf")
    assert from_hf.apply_chat_template(CHAT, True) == tok.apply_chat_template(CHAT, True)
    assert [from_hf.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    with pytest.raises(TinyLMError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path / "nothing")


def test_training_is_deterministic(tmp_path, tiny_corpus_dir, tok):
    again = train_tokenizer(str(tiny_corpus_dir), str(tmp_path / "again"), vocab_size=1024)
    assert again.hash == tok.hash


def test_chinese_tokenizes_well(tmp_path):
    """A 4096-token tokenizer trained on 3000 Tang poems: well under 1.5 tokens per Han character on 300 others."""
    with lzma.open(CORPORA["tang"].path, "rt", encoding="utf-8") as f:
        poems = [json.loads(line) for line in itertools.islice(f, 3300)]
    docs = [p["title"] + "\n" + "\n".join(p["paragraphs"]) for p in poems]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:3000]))
    tok = train_tokenizer(str(tmp_path / "train.jsonl"), str(tmp_path / "tok"), vocab_size=4096)
    held_out = docs[3000:]
    tokens = sum(len(tok.encode(d)) for d in held_out)
    han = sum(len(re.findall(r"[\u3400-\u9fff]", d)) for d in held_out)
    assert tokens / han < 1.4


def test_cli_vocab_too_small(tmp_path, capsys):
    code = main(
        ["tokenizer", "train", "--data", "tang300", "--vocab-size", "264", "--out", str(tmp_path / "t")]
    )
    assert code == 2 and not (tmp_path / "t").exists()
    err = capsys.readouterr().err
    assert err == (
        "tinylm: error: vocab_size 264 is too small: the 256 byte tokens and 10 special tokens alone need 266\n"
    )


def test_cli_rerun_skips_and_a_different_run_is_refused(tmp_path, capsys):
    out = tmp_path / "tok"
    args = ["tokenizer", "train", "--data", "tang300", "--out", str(out)]
    assert main([*args, "--vocab-size", "300"]) == 0
    stamp = (out / "tokenizer.json").stat().st_mtime_ns
    assert main([*args, "--vocab-size", "300"]) == 0
    assert "already holds this tokenizer; skipping" in capsys.readouterr().out
    assert (out / "tokenizer.json").stat().st_mtime_ns == stamp
    assert main([*args, "--vocab-size", "400"]) == 2
    err = capsys.readouterr().err
    assert (
        f"tinylm: error: output directory {out} already holds a different run: vocab_size (was 300, now 400)"
        in err
    )
    assert Tokenizer.load(out).vocab_size == 300  # the old run is untouched
    assert main([*args, "--vocab-size", "400", "--overwrite", "true"]) == 0
    assert Tokenizer.load(out).vocab_size == 400
