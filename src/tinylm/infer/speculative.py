"""Speculative decoding: a cheap drafter proposes the next few tokens, the model checks them all in one pass.

A drafter is either `PromptLookup` (the tokens that followed the latest earlier occurrence of the text's
last few tokens, in the prompt or the output so far: no model, strong when the output copies its input)
or `DraftModel` (a small model on the same tokenizer, decoding ahead on its own KV cache). The engine
feeds the model its last token plus the k draft tokens, which gives the model's distribution p at all
k + 1 positions (`Batch._speculate`), and `verify` keeps draft tokens by the rule of Leviathan et al. and
Chen et al. (2023): accept x with probability min(1, p(x) / q(x)), where q is the drafter's distribution
(one-hot for prompt lookup); at the first rejection draw from normalize(max(0, p - q)) and stop; if all k
are accepted, draw one more from p. Every emitted token is then distributed exactly as plain sampling
would draw it, so greedy decoding gives the same tokens; a sampled run gives different tokens from a plain
run with the same seed, but from the same distribution. p and q are `token_distribution`'s: the same
penalties, temperature and truncation plain decoding applies.

A greedy check computes attention query by query (`stepwise_attention`), as k + 1 one-token steps would: with
int4 weights, whose matmuls round each row alike however many rows they get, its logits are then bitwise
plain decoding's, so near-ties break the same way. Full-precision matmuls still round a k + 1-row product
differently from a one-row one, in the last bits.

Speculation cuts latency when the model's forward pass costs about the same for k + 1 tokens as for one,
which on a CPU holds while reading the weights dominates; it pays off in proportion to how many draft
tokens are accepted (`Sequence.drafted`, `Sequence.accepted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from ..errors import TinyLMError
from ..models.base import Backbone
from .sampling import SamplingParams, draw, token_distribution


@dataclass
class Draft:
    """Proposed next tokens and the distribution each was drawn from."""

    tokens: list[int]
    probs: torch.Tensor | None = None
    """q, (k, V); None means one-hot on each token (a deterministic drafter)."""


class Speculator(Protocol):
    """What the engine asks of a drafter."""

    tokens: int
    """Most draft tokens per step."""

    def propose(
        self,
        ids: list[int],
        prompt_len: int,
        params: SamplingParams,
        generator: torch.Generator | None,
        k: int,
    ) -> Draft | None:
        """Up to k tokens that may follow `ids` (a prompt of `prompt_len` tokens and the output so far, decoded
        with `params` and `generator`); None when there is no guess."""


def verify(p: torch.Tensor, draft: Draft, greedy: bool, generator: torch.Generator | None) -> list[int]:
    """The tokens to emit: the accepted prefix of `draft.tokens` and one token drawn from the model.

    `p` (k + 1, V) is the model's distribution after each prefix of the draft. A greedy p is one-hot, so a
    draft token is kept exactly when it is the argmax and no random number is drawn."""
    out = []
    for i, x in enumerate(draft.tokens):
        px = float(p[i, x])
        qx = 1.0 if draft.probs is None else float(draft.probs[i, x])
        if px >= qx or (px > 0 and float(torch.rand((), generator=generator)) * qx < px):
            out.append(x)
            continue
        if draft.probs is None:  # q one-hot on x: max(0, p - q) is p without x
            residual = p[i].index_fill(0, torch.tensor([x], device=p.device), 0)
        else:
            residual = (p[i] - draft.probs[i]).clamp_min(0)
        total = float(residual.sum())  # > 0 whenever x was rejected, but for rounding
        out.append(draw(residual / total if total > 0 else p[i], greedy, generator))
        return out
    return [*out, draw(p[len(draft.tokens)], greedy, generator)]


class PromptLookup:
    """Drafts by copying: find the latest earlier occurrence of the last n tokens (n = max_ngram down to
    min_ngram) in prompt + output, and propose the tokens that followed it.

    A match of one token is weak evidence: on the 50 copy-heavy SmolLM2 prompts, drafting from matches of 2
    or more raised the share of draft tokens accepted from 53% to 71% and the speed-up from 1.74x to 1.83x
    (one run, benchmarks/speculative_decoding.py's prompts), since a rejected check costs about two steps."""

    def __init__(self, tokens: int = 4, max_ngram: int = 3, min_ngram: int = 2) -> None:
        self.tokens, self.max_ngram, self.min_ngram = tokens, max_ngram, min_ngram

    def propose(self, ids, prompt_len, params, generator, k) -> Draft | None:
        for n in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):
                if ids[start : start + n] == tail:
                    return Draft(ids[start + n : start + n + k])
        return None


class DraftModel:
    """Drafts with a small causal model on the target's tokenizer, sampling from its own `token_distribution`.

    Its KV cache holds the tokens it last read; before each proposal it is cut back to the longest prefix it
    shares with the text (rejected draft tokens leave it; a chat's next turn keeps the history) and the rest
    is fed in one pass."""

    def __init__(self, model: Backbone, tokens: int = 4) -> None:
        self.model, self.tokens = model.eval(), tokens
        self._cache = model.new_cache(1, 256)  # grows as needed
        self._fed: list[int] = []  # the tokens in the cache

    @classmethod
    def load(
        cls, path: str | Path, target: Backbone, tokenizer, tokens: int = 4, quantize: str = "none"
    ) -> DraftModel:
        """The checkpoint at `path` as a drafter for `target` (and its `tokenizer`); a TinyLMError if the
        draft is no causal decoder or their vocabularies differ."""
        from ..models import load_model
        from ..models.quant import quantize_int4
        from ..models.registry import get_family
        from ..tokenizer import Tokenizer

        if not Path(path).is_dir():
            raise TinyLMError(f"--draft_model {path} is not a checkpoint directory")
        check_same_vocabulary(Tokenizer.load(path), tokenizer, path)
        model = load_model(path)
        if get_family(model.config.family).objective != "clm" or model.config.prefix_lm:
            raise TinyLMError(
                f"--draft_model {path} is a {model.config.family} model; a draft model must be a causal decoder"
            )
        if model.config.vocab_size != target.config.vocab_size:
            raise TinyLMError(
                f"--draft_model {path} has {model.config.vocab_size} output logits, the model "
                f"{target.config.vocab_size}: a draft model needs the same vocabulary"
            )
        if quantize == "int4":
            quantize_int4(model)
        return cls(model.to(target.device), tokens)

    @torch.inference_mode()
    def propose(self, ids, prompt_len, params, generator, k) -> Draft | None:
        if len(ids) + k > self.model.config.max_seq_len:
            return None
        same = 0
        while same < min(len(self._fed), len(ids) - 1) and self._fed[same] == ids[same]:
            same += 1
        self._cache.truncate(same)
        device, feed, out, probs = self.model.device, ids[same:], list(ids), []
        for _ in range(k):
            x = torch.tensor([feed], device=device)
            logits = self.model(x, attention_mask=torch.ones_like(x), cache=self._cache, keep=1)[:, -1]
            history = [torch.tensor(out, device=device)] if params.uses_penalties else []
            generated = [torch.tensor(out[prompt_len:], device=device)] if params.uses_penalties else []
            q = token_distribution(logits, [params], history, generated)[0]
            feed = [draw(q, params.greedy, generator)]
            out.append(feed[0])
            probs.append(q)
        self._fed = out[:-1]  # the last draft token was never fed
        return Draft(out[len(ids) :], torch.stack(probs))


def check_same_vocabulary(draft, target, path, role: str = "--draft_model", other: str = "the model") -> None:
    """Raise a TinyLMError naming the first difference between two tokenizers' ids (`draft`'s, read from
    `path` given as `role`, against `other`'s `target`)."""
    if draft.hash == target.hash:
        return
    for name in ("vocab_size", "eos_id", "bos_id", "pad_id", "special_ids"):
        if getattr(draft, name) != getattr(target, name):
            raise TinyLMError(
                f"{role} {path} has tokenizer {name} {getattr(draft, name)!r}, {other} "
                f"{getattr(target, name)!r}: it needs {other}'s tokenizer"
            )
    for i in range(target.vocab_size):
        if draft.id_to_token(i) != target.id_to_token(i):
            raise TinyLMError(
                f"{role} {path} spells token {i} {draft.id_to_token(i)!r}, {other} "
                f"{target.id_to_token(i)!r}: it needs {other}'s tokenizer"
            )


def make_speculator(
    speculative: Literal["none", "lookup", "draft"],
    draft_model: Path | None,
    draft_tokens: int,
    target: Backbone,
    tokenizer,
    quantize: str = "none",
) -> Speculator | None:
    """The drafter the `--speculative`, `--draft_model` and `--draft_tokens` options ask for (None for none),
    for the model `target` with `tokenizer`; `quantize` is the model's, applied to a draft model too."""
    if speculative not in ("none", "lookup", "draft"):
        raise TinyLMError(f"--speculative must be none, lookup or draft, got {speculative!r}")
    if draft_tokens < 1:
        raise TinyLMError(f"--draft_tokens must be >= 1, got {draft_tokens}")
    if (speculative == "draft") != (draft_model is not None):
        raise TinyLMError(
            "--speculative draft needs --draft_model DIR, and --draft_model needs --speculative draft"
        )
    if speculative == "lookup":
        return PromptLookup(draft_tokens)
    if speculative == "draft":
        return DraftModel.load(draft_model, target, tokenizer, draft_tokens, quantize)
    return None
