"""`tinylm tokenizer train`: a byte-level BPE tokenizer trained on a corpus (see `tinylm.tokenizer`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_dir, atomic_file, check_out_dir, read_yaml, write_json, write_yaml
from ..tokenizer import SPECIAL_TOKENS, Tokenizer, special_token_config, train_bpe
from .readers import read_documents


def train_tokenizer(
    data: str,
    out: str,
    vocab_size: int = 8192,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
    min_frequency: int = 2,
    overwrite: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer on a corpus and save it where `transformers` can load it.

    Args:
        data: Corpus: an embedded name (see `tinylm data list`), a .txt / .jsonl file, a glob or a directory.
        out: Output directory for tokenizer.json, tokenizer_config.json and config.yaml.
        vocab_size: Vocabulary size, counting the 256 byte tokens and the 9 special tokens.
        field: JSONL field that holds each document's text.
        template: JSONL template instead of a field, e.g. '{title}\\n{paragraphs}' (lists joined by newlines).
        skip_bad_lines: Skip (and count) JSONL lines that are not JSON objects instead of stopping.
        min_frequency: A pair of tokens must occur this often to be merged.
        overwrite: Replace an output directory that holds a different run.
    """
    config = {
        "data": data,
        "vocab_size": vocab_size,
        "field": field,
        "template": template,
        "skip_bad_lines": skip_bad_lines,
        "min_frequency": min_frequency,
    }
    if check_out_dir(out, config, overwrite):
        print(f"tokenizer: {out} already holds this tokenizer; skipping")
        return Tokenizer.load(out)
    tok = train_bpe(read_documents(data, field, template, skip_bad_lines), vocab_size, min_frequency)
    with atomic_dir(out) as tmp:
        with atomic_file(tmp / "tokenizer.json") as f:
            f.write(tok.to_str(pretty=True))
        write_json(tmp / "tokenizer_config.json", special_token_config())
        write_yaml(tmp / "config.yaml", config)
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {out}")
    return Tokenizer.load(out)


def summarize(out: str | os.PathLike) -> str:
    """A Markdown paragraph on a trained tokenizer directory, for the pipeline's report."""
    tok = Tokenizer.load(out)
    config = read_yaml(Path(out) / "config.yaml")
    return (
        f"Byte-level BPE trained on `{config['data']}`: {tok.vocab_size:,} tokens "
        f"({len(SPECIAL_TOKENS)} special), hash `{tok.hash[:12]}`."
    )
