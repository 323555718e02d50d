"""Tokenizers: load any Hugging Face `tokenizer.json` directory (byte-level BPE, BERT's WordPiece), or train
a byte-level BPE on documents (`train_bpe`; `tinylm tokenizer train` reads a corpus for it in
`tinylm.data.bpe`).

A tokenizer directory holds `tokenizer.json` (the `tokenizers` model: merges, vocabulary, pre-tokenizer)
and `tokenizer_config.json` (which tokens are BOS / EOS / PAD, and the Jinja chat template), the same two
files `transformers.AutoTokenizer` reads. So a tokenizer trained here loads in `transformers`, and an
imported one (SmolLM2's, whose EOS is `<|im_end|>`; MiniLM's WordPiece, whose [SEP] ends a text and which
has [CLS], [MASK], [PAD]) loads here; nothing assumes our own token names: the config names them.

Trained tokenizers work on raw UTF-8 bytes (exact round trip for any text, no unknown token), split digits
one by one (as SmolLM2 and Llama do, which helps arithmetic), and reserve all special tokens from the
start so chat fine-tuning never has to grow the vocabulary. `<|endoftext|>` is the EOS that ends every
document; chat turns are ChatML: `<|im_start|>role\\ncontent<|im_end|>\\n`; `<|mask|>` is the mask token of
masked-LM pretraining. It comes last (id 9), so no special token of a tokenizer trained before it moved;
such a tokenizer simply has no mask token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer
from tqdm import tqdm

from .errors import TinyLMError
from .io import atomic_file, read_json, write_json

EOS, BOS, PAD = "<|endoftext|>", "<|bos|>", "<|pad|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
MASK = "<|mask|>"
SPECIAL_TOKENS = (EOS, BOS, PAD, *CHAT_TOKENS, MASK)  # ids 0..9, in this order
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Tokenizer:
    """A loaded tokenizer directory: encode / decode, special token ids, and the chat template."""

    def __init__(self, tokenizer_json: bytes, config: dict[str, Any], chat_template: str | None = None):
        self._json = tokenizer_json
        self.config = config
        self.chat_template = chat_template or config.get("chat_template")
        self._tok = HFTokenizer.from_str(tokenizer_json.decode("utf-8"))
        # A second copy that reads "<|endoftext|>" in data as plain text, so a corpus can't inject controls.
        self._plain = HFTokenizer.from_str(tokenizer_json.decode("utf-8"))
        self._plain.encode_special_tokens = True
        for tok in (self._tok, self._plain):  # BERT's file pads and truncates to 128; callers decide that
            tok.no_padding()
            tok.no_truncation()
        # BERT's WordPiece has no EOS: its [SEP] ends a text, so it ends documents in token shards too.
        self.eos_token = self._special("eos_token") or self._special("sep_token")
        if self.eos_token is None:
            raise TinyLMError(
                "tokenizer_config.json names no eos_token (or sep_token) that is in the vocabulary"
            )
        self.bos_token = self._special("bos_token")
        self.pad_token = self._special("pad_token") or self.eos_token
        self.mask_token = self._special("mask_token")
        """The masked-LM mask token ([MASK], <|mask|>), or None."""
        self.cls_token = self._special("cls_token")
        self.sep_token = self._special("sep_token")

    def _special(self, key: str) -> str | None:
        value = self.config.get(key)
        token = value.get("content") if isinstance(value, dict) else value
        return token if token is not None and self._tok.token_to_id(token) is not None else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load `tokenizer.json` and `tokenizer_config.json` (and `chat_template.jinja`, if any) from a dir."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise TinyLMError(f"{path}: no tokenizer.json here; train one with `tinylm tokenizer train`")
        config_path, map_path = path / "tokenizer_config.json", path / "special_tokens_map.json"
        config = read_json(config_path) if config_path.is_file() else {}
        if map_path.is_file():  # transformers reads special tokens from either file; the config wins
            config = {**read_json(map_path), **config}
        jinja = path / "chat_template.jinja"
        template = jinja.read_text(encoding="utf-8") if jinja.is_file() else None
        return cls((path / "tokenizer.json").read_bytes(), config, template)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer files into `path` (beside a checkpoint, say); tokenizer.json byte for byte."""
        path = Path(path)
        with atomic_file(path / "tokenizer.json", "wb") as f:
            f.write(self._json)
        template = {"chat_template": self.chat_template} if self.chat_template else {}
        write_json(path / "tokenizer_config.json", {**self.config, **template})

    def with_special_tokens(self, tokens: list[str]) -> Tokenizer:
        """A copy with `tokens` added as special tokens at the end of the vocabulary (existing ids stay).

        Tokens it already holds as special tokens keep their ids; one that the vocabulary holds as ordinary
        text would get a second meaning, which is a TinyLMError.
        """
        added = {t["content"] for t in json.loads(self._json).get("added_tokens", []) if t.get("special")}
        clash = [t for t in tokens if t not in added and self._tok.token_to_id(t) is not None]
        if clash:
            raise TinyLMError(
                f"special token {clash[0]!r} is already an ordinary token of this tokenizer "
                f"(id {self._tok.token_to_id(clash[0])}); it cannot also be a special one"
            )
        new = [t for t in tokens if t not in added]
        tok = HFTokenizer.from_str(self._json.decode("utf-8"))
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
        extra = [t for t in self.config.get("additional_special_tokens", []) if t not in new]
        config = {**self.config, "additional_special_tokens": [*extra, *new]}
        return Tokenizer(tok.to_str().encode("utf-8"), config, self.chat_template)

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of tokenizer.json: token shards and checkpoints record it to catch a mismatched tokenizer."""
        return hashlib.sha256(self._json).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self._tok.token_to_id(self.eos_token)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self._tok.token_to_id(self.bos_token)

    @property
    def pad_id(self) -> int:
        """The padding id: the `pad_token` if the config names one, else EOS."""
        return self._tok.token_to_id(self.pad_token)

    @property
    def mask_id(self) -> int | None:
        return None if self.mask_token is None else self._tok.token_to_id(self.mask_token)

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of every special token (added tokens marked special: EOS, PAD, chat markers, [CLS], [MASK] ...)."""
        added = json.loads(self._json).get("added_tokens", [])
        named = (
            self.eos_token,
            self.bos_token,
            self.pad_token,
            self.mask_token,
            self.cls_token,
            self.sep_token,
        )
        ids = {t["id"] for t in added if t.get("special")}
        return frozenset(ids | {self._tok.token_to_id(t) for t in named if t is not None})

    @functools.cached_property
    def token_surfaces(self) -> list[bytes]:
        """What each id spells inside a text, as UTF-8 bytes: byte-level BPE's bytes; for WordPiece a piece
        after a space, a "##" piece glued on, a CJK character (a word piece of its own) without a space."""
        decoder = (json.loads(self._json).get("decoder") or {}).get("type")
        tokens = [self.id_to_token(i) or "" for i in range(self.vocab_size)]
        if decoder == "ByteLevel":
            inverse = {c: b for b, c in enumerate(_byte_alphabet())}
            return [
                bytes(inverse[c] for c in t) if all(c in inverse for c in t) else t.encode() for t in tokens
            ]
        if decoder == "WordPiece":
            return [
                (t[2:] if t.startswith("##") else t if len(t) == 1 and _is_cjk(t) else " " + t).encode()
                for t in tokens
            ]
        return [t.replace("\u2581", " ").encode() for t in tokens]

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of an id (a byte-level one spells a space as Ġ), None outside the vocabulary."""
        return self._tok.id_to_token(token_id)

    def encode(
        self, text: str, special: bool = True, frame: bool = False, max_length: int | None = None
    ) -> list[int]:
        """Token ids of `text`; with `special=False`, special-token strings in it are encoded as text; with
        `frame=True`, the tokenizer's own framing is added (BERT: [CLS] text [SEP]; ours add nothing);
        `max_length` cuts the text so that the ids, framing included, fit."""
        tok = self._tok if special else self._plain
        encoding = tok.encode(text, add_special_tokens=False)
        if max_length is not None:
            encoding.truncate(max_length - (tok.num_special_tokens_to_add(False) if frame else 0))
        return (tok.post_process(encoding) if frame else encoding).ids

    def encode_batch(self, texts: list[str], special: bool = True) -> list[list[int]]:
        """`encode` for many texts at once, spread over CPU cores, skipping offsets (a third faster)."""
        encodings = (self._tok if special else self._plain).encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = False, **kwargs: Any
    ) -> str:
        """Render a conversation with the Jinja chat template, as `transformers` does (returns the text).

        `add_generation_prompt` appends the opening of an assistant turn; extra keyword arguments (e.g.
        `tools`) are passed to the template.
        """
        if not self.chat_template:
            raise TinyLMError("this tokenizer has no chat_template in tokenizer_config.json")
        specials = {
            "bos_token": self.bos_token or "",
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
        }
        return _compile_template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **specials, **kwargs
        )


def _byte_alphabet() -> list[str]:
    """The character byte-level BPE writes for each byte 0..255 (GPT-2's printable stand-ins)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _is_cjk(char: str) -> bool:
    return (
        "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\U00020000" <= char <= "\U0002ffff"
    )


def _raise(message: str) -> None:
    raise TinyLMError(f"chat template: {message}")


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.cache
def _compile_template(template: str):
    """A compiled template in the same sandboxed Jinja environment `transformers` uses."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def special_token_config() -> dict[str, Any]:
    """The tokenizer_config.json fields `transformers` needs to know our special tokens and chat format."""
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "mask_token": MASK,
        "additional_special_tokens": list(CHAT_TOKENS),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": decoder,
        "chat_template": CHAT_TEMPLATE,
    }


def train_bpe(documents: Iterable[str], vocab_size: int, min_frequency: int = 2) -> HFTokenizer:
    """A byte-level BPE trained on `documents`, with every special token reserved (ids 0..9)."""
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise TinyLMError(
            f"vocab_size {vocab_size} is too small: the 256 byte tokens and {len(SPECIAL_TOKENS)} special "
            f"tokens alone need {minimum}"
        )
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(tqdm(documents, desc="reading", unit=" docs", disable=None), trainer)
    return tok
