"""The `tinylm ngram` verbs: train (and score the held-out split), eval, generate, export to ARPA."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from ..data.shards import SPLITS, TokenShards
from ..errors import TinyLMError
from ..io import check_out_dir
from ..tokenizer import Tokenizer
from .arpa import read_arpa, write_arpa
from .counts import BOS, EOS, UNK
from .data import Split, check_split, corpus_splits, sentence_ids, shards_split
from .evaluate import heldout_scores
from .model import SPECIALS, TOKENIZER_DIR, NGramLM, check_order
from .smoothing import METHODS
from .train import train_ids, train_ngram
from .units import Unit, check_unit, join, sentences, token_vocab


def _source(data: str | None, shards: str | None) -> None:
    if (data is None) == (shards is None):
        raise TinyLMError("give the text as exactly one of --data CORPUS or --shards DIR")


def _splits(
    data, shards, unit, tokenizer, val_fraction, field, template, skip_bad_lines, wanted
) -> tuple[dict[str, Split], Tokenizer | None]:
    """The wanted splits of a corpus or of shards, with the tokenizer they need (None for char / word text)."""
    if shards is not None:
        s = TokenShards.open(shards)
        tok = Tokenizer.load(tokenizer or s.tokenizer_dir())
        s.check_tokenizer(tok)
        return {w: shards_split(s, w, tok, decode=unit != "token") for w in wanted}, tok
    tok = Tokenizer.load(tokenizer) if tokenizer else None
    check_unit(unit, has_tokenizer=tok is not None)
    return corpus_splits(data, val_fraction, field, template, skip_bad_lines), tok


def _report(name: str, scores: dict[str, float]) -> None:
    print(
        f"{name}: {scores['bpb']:.4f} bits per byte, perplexity {scores['perplexity']:.2f} "
        f"({scores['tokens']:,} tokens, {scores['bytes']:,} bytes, {scores['oov_rate']:.2%} <unk>)"
    )


def ngram_train(
    out: str,
    data: str | None = None,
    shards: str | None = None,
    unit: Unit = "char",
    order: int = 3,
    method: Literal["mkn", "kn", "wb", "addk"] = "mkn",
    k: float = 1.0,
    min_count: int = 1,
    tokenizer: str | None = None,
    val_fraction: float = 0.1,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
    overwrite: bool = False,
) -> dict[str, float]:
    """Train an n-gram language model on a corpus or token shards and score it on the held-out split.

    Args:
        out: Output model directory (ngram.json, vocab.json, arrays.npz).
        data: Corpus: an embedded name, a .txt / .jsonl file, a glob or a directory, split as `tinylm data
            prepare` splits it.
        shards: Token shards directory instead of a corpus: train on its train split, score its val split.
        unit: What to count: "char" (any language), "word" (words and punctuation, per line) or "token"
            (the BPE tokens of --tokenizer, or of the shards' tokenizer).
        order: Longest n-gram, 1 to 5.
        method: Estimator: "mkn" (interpolated modified Kneser-Ney), "kn", "wb" (Witten-Bell) or "addk".
        k: The added count of "addk".
        min_count: Tokens seen fewer times are counted as <unk> (char and word units).
        tokenizer: Tokenizer directory (for unit "token" with --data; default with --shards: the shards' own).
        val_fraction: Held-out share of a corpus.
        field: JSONL field that holds each document's text.
        template: JSONL template instead of a field, e.g. '{title}\\n{paragraphs}'.
        skip_bad_lines: Skip (and count) JSONL lines that are not JSON objects instead of stopping.
        overwrite: Replace an existing output directory.
    """
    check_order(order)
    if method not in METHODS:
        raise TinyLMError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    check_unit(unit, has_tokenizer=bool(tokenizer or shards))
    _source(data, shards)
    check_out_dir(out, None, overwrite)
    splits, tok = _splits(
        data, shards, unit, tokenizer, val_fraction, field, template, skip_bad_lines, SPLITS
    )
    where = data or shards
    check_split(splits["train"], "train", where)
    config = {
        "unit": unit,
        "data": where,
        "from": "shards" if shards else "corpus",
        "val_fraction": val_fraction,
    }
    start = time.perf_counter()
    if unit == "token":
        config["tokenizer_hash"] = tok.hash
        vocab = [*SPECIALS, *token_vocab(tok)]
        lm = train_ids(sentence_ids(None, splits["train"], unit, tok), vocab, order, method, k, config)
    else:
        train_sentences = (s for doc in splits["train"].documents for s in sentences(doc, unit))
        lm = train_ngram(train_sentences, order, method, k, min_count, config=config)
    lm.config["train_seconds"] = round(time.perf_counter() - start, 3)
    print(f"ngram: {lm!r} trained in {lm.config['train_seconds']:.1f}s")
    scores: dict[str, float] = {}
    if splits["val"].documents or splits["val"].token_ids:
        scores = heldout_scores(lm, sentence_ids(lm, splits["val"], unit, tok), splits["val"].n_bytes)
        lm.config["val"] = scores
        _report("val", scores)
    lm.save(out, tokenizer=tok if unit == "token" else None)
    print(f"ngram: saved -> {out}")
    return scores


def load_model(model: str, unit: str | None = None) -> tuple[NGramLM, str, Tokenizer | None]:
    """The model, its unit (ARPA files name none: pass --unit) and, for unit "token", its tokenizer."""
    lm = read_arpa(model) if Path(model).is_file() else NGramLM.load(model)
    unit = unit or lm.config.get("unit")
    if unit is None:
        raise TinyLMError(f"{model} does not say what it counts; pass --unit char, word or token")
    tok = None
    if unit == "token":
        tok_dir = Path(model) / TOKENIZER_DIR
        if not (tok_dir / "tokenizer.json").is_file():
            raise TinyLMError(f"{model}: a token-unit model needs its tokenizer in {tok_dir}")
        tok = Tokenizer.load(tok_dir)
    check_unit(unit, has_tokenizer=tok is not None)
    return lm, unit, tok


def ngram_eval(
    model: str,
    data: str | None = None,
    shards: str | None = None,
    split: Literal["val", "train"] = "val",
    unit: Unit | None = None,
    tokenizer: str | None = None,
    val_fraction: float = 0.1,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
) -> dict[str, float]:
    """Score an n-gram model (directory or ARPA file) in bits per byte and perplexity on a split.

    Args:
        model: Model directory from `tinylm ngram train`, or an ARPA file.
        data: Corpus, split as `tinylm data prepare` splits it.
        shards: Token shards directory instead of a corpus (the same split a neural model's `tinylm eval bpb` scores).
        split: Which split to score: "val" or "train".
        unit: What the model counts, for an ARPA file (a model directory records it).
        tokenizer: Tokenizer to decode shards with (default: the shards' own).
        val_fraction: Held-out share of a corpus.
        field: JSONL field that holds each document's text.
        template: JSONL template instead of a field.
        skip_bad_lines: Skip (and count) JSONL lines that are not JSON objects instead of stopping.
    """
    _source(data, shards)
    lm, unit, tok = load_model(model, unit)
    if unit == "token":
        tokenizer = str(Path(model) / TOKENIZER_DIR)
    splits, text_tok = _splits(
        data, shards, unit, tokenizer, val_fraction, field, template, skip_bad_lines, (split,)
    )
    if unit == "token" and lm.config.get("tokenizer_hash") not in (None, tok.hash):
        raise TinyLMError(f"{model}: its tokenizer is not the one it was trained with")
    check_split(splits[split], split, data or shards)
    scores = heldout_scores(lm, sentence_ids(lm, splits[split], unit, tok or text_tok), splits[split].n_bytes)
    _report(split, scores)
    return scores


def ngram_generate(
    model: str,
    prompt: str = "",
    max_tokens: int = 200,
    n: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    unit: Unit | None = None,
) -> list[str]:
    """Sample text from an n-gram model, seeded, each sample until </s> or max_tokens.

    Args:
        model: Model directory from `tinylm ngram train`, or an ARPA file.
        prompt: Text the samples continue (it is not repeated in the output).
        max_tokens: Most tokens per sample.
        n: Number of samples.
        temperature: Divides the log-probabilities; 0 takes the most likely token every time.
        seed: Sample i uses seed + i.
        unit: What the model counts, for an ARPA file.
    """
    if max_tokens < 1 or n < 1 or temperature < 0:
        raise TinyLMError(
            f"need max_tokens >= 1, n >= 1 and temperature >= 0; got {max_tokens}, {n}, {temperature}"
        )
    lm, unit, tok = load_model(model, unit)
    start = ["<s>", *(t for s in sentences(prompt, unit, tok) for t in s)] if prompt else ["<s>"]
    samples = []
    for i in range(n):
        rng, context, made = np.random.default_rng(seed + i), list(start), []
        for _ in range(max_tokens):
            logits = lm.distribution(context)
            logits[[UNK, BOS]] = -np.inf
            if temperature == 0:
                choice = int(np.argmax(logits))
            else:
                p = np.exp((logits - logits.max()) / temperature)
                choice = int(rng.choice(len(p), p=p / p.sum()))
            if choice == EOS:
                break
            context.append(lm.vocab[choice])
            made.append(lm.vocab[choice])
        samples.append(join(made, unit, tok))
        print(samples[-1])
    return samples


def ngram_export(model: str, out: str) -> str:
    """Write an n-gram model as an ARPA file (log10 probabilities and backoff weights) that KenLM loads.

    Args:
        model: Model directory from `tinylm ngram train`.
        out: The ARPA file to write.
    """
    lm = NGramLM.load(model)
    write_arpa(lm, out)
    print(f"ngram: {lm!r} -> {out}")
    return out
