"""The best writings of typed pinyin: paths through the lattice scored by a character n-gram model.

A path's score is the natural-log probability of its characters as one sentence, from "<s>" to "</s>".
`viterbi` finds the single best path exactly (paths that end in the same last n-1 characters at the same
node are merged, since nothing later can tell them apart); `beam_search` keeps the best few distinct texts
at every node and returns the top k. `NeuralScorer` adds a neural tinylm model's log-probability of each
candidate with a weight, to rerank the beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import TinyLMError
from .lattice import Edge, Lattice, build_lattice
from .syllables import read_pinyin

BOS, EOS = "<s>", "</s>"


class Scorer(Protocol):
    """A character language model: `tinylm.ngram.NGramLM` is one."""

    order: int

    def logprob(self, token: str, context: Sequence[str]) -> float:
        """Natural-log P(token | the last order-1 items of context); context may begin with "<s>"."""
        ...


@runtime_checkable
class WholeDistribution(Protocol):
    """A scorer that also gives every token's log-probability after a context at once (NGramLM does), which
    is far cheaper than asking for the dozens of characters a syllable can be one by one."""

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """Natural-log P(w | context) for every vocabulary id w."""
        ...

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """Vocabulary ids of tokens (the unknown token's id for those outside the vocabulary)."""
        ...


@dataclass(frozen=True)
class Candidate:
    """One writing of the input: its text, n-gram score, neural score if rescored, and the sum used to rank."""

    text: str
    score: float
    neural: float | None = None
    total: float = 0.0


class Memo:
    """A scorer's log-probabilities remembered for one decode (the same n-grams recur on many paths)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.n = scorer, scorer.order
        self.seen: dict[tuple[str, tuple[str, ...]], float] = {}
        self.whole = isinstance(scorer, WholeDistribution)
        self.distributions: dict[tuple[str, ...], np.ndarray] = {}
        self.id: dict[str, int] = {}

    def logprob(self, token: str, context: tuple[str, ...]) -> float:
        """log P(token | context), asked of the scorer once."""
        if not self.whole:
            key = (token, context)
            if key not in self.seen:
                self.seen[key] = self.scorer.logprob(token, context)
            return self.seen[key]
        if context not in self.distributions:
            self.distributions[context] = self.scorer.distribution(context)
        if token not in self.id:
            self.id[token] = self.scorer.ids([token])[0]
        return float(self.distributions[context][self.id[token]])

    def tail(self, context: tuple[str, ...]) -> tuple[str, ...]:
        return context[max(0, len(context) - (self.n - 1)) :] if self.n > 1 else ()

    def extend(self, context: tuple[str, ...], text: str) -> tuple[float, tuple[str, ...]]:
        """log P(text | context) one character at a time, and the context after it."""
        total = 0.0
        for token in text:
            total += self.logprob(token, context)
            context = self.tail((*context, token))
        return total, context

    def finish(self, context: tuple[str, ...]) -> float:
        return self.logprob(EOS, context)


def sentence_score(text: str, scorer: Scorer) -> float:
    """log P(<s> text </s>) under `scorer`: the score every decoder here maximises."""
    memo = Memo(scorer)
    score, context = memo.extend(memo.tail((BOS,)), text)
    return score + memo.finish(context)


def viterbi(lattice: Lattice, scorer: Scorer) -> Candidate:
    """The exact best path through the lattice under an n-gram scorer."""
    memo = Memo(scorer)
    # node -> context -> (score, previous node, previous context, edge)
    states: dict[int, dict[tuple[str, ...], tuple[float, int, tuple[str, ...], Edge | None]]] = {
        0: {memo.tail((BOS,)): (0.0, -1, (), None)}
    }
    for node in lattice.nodes():
        for context, (score, *_) in states.get(node, {}).items():
            for edge in lattice.edges[node]:
                gain, after = memo.extend(context, edge.text)
                there = states.setdefault(edge.end, {})
                if after not in there or there[after][0] < score + gain:
                    there[after] = (score + gain, node, context, edge)
    ends = states[lattice.end]  # a reading always splits, and every syllable has characters
    context = max(ends, key=lambda c: ends[c][0] + memo.finish(c))
    score = ends[context][0] + memo.finish(context)
    pieces, node = [], lattice.end
    while node > 0:
        _, node, context, edge = states[node][context]
        pieces.append(edge.text)
    text = "".join(reversed(pieces))
    return Candidate(text, score, total=score)


def beam_search(lattice: Lattice, scorer: Scorer, beam: int = 16, top: int = 5) -> list[Candidate]:
    """The `top` best distinct texts found keeping the `beam` best distinct texts at every node."""
    memo = Memo(scorer)
    hyps: dict[int, dict[str, tuple[float, tuple[str, ...]]]] = {0: {"": (0.0, memo.tail((BOS,)))}}
    for node in lattice.nodes():
        here = hyps.pop(node, {})
        for text in sorted(here, key=lambda t: here[t][0], reverse=True)[:beam]:
            score, context = here[text]
            for edge in lattice.edges[node]:
                gain, after = memo.extend(context, edge.text)
                there = hyps.setdefault(edge.end, {})
                new = text + edge.text
                if new not in there or there[new][0] < score + gain:
                    there[new] = (score + gain, after)
    scored = [(s + memo.finish(c), t) for t, (s, c) in hyps[lattice.end].items()]
    return [Candidate(t, s, total=s) for s, t in sorted(scored, reverse=True)[:top]]


class NeuralScorer:
    """log P(text) under a neural tinylm model, each text read as a new document (after EOS)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        from ..models import load_model
        from ..tokenizer import Tokenizer

        self.tokenizer = Tokenizer.load(model_dir)
        self.model = load_model(model_dir).to(device).eval()
        if self.tokenizer.eos_id is None:
            raise TinyLMError(f"{model_dir}: the tokenizer has no end-of-text token to start a document with")

    def __call__(self, texts: list[str]) -> list[float]:
        from ..infer.scoring import continuation_logprobs

        return continuation_logprobs(
            self.model, [self.tokenizer.eos_id], [self.tokenizer.encode(t) for t in texts]
        )


def rescore(candidates: list[Candidate], neural: NeuralScorer, weight: float) -> list[Candidate]:
    """The candidates reranked by n-gram score + weight × neural log-probability."""
    if not candidates:
        return []
    logps = neural([c.text for c in candidates])
    mixed = [
        replace(c, neural=lp, total=c.score + weight * lp) for c, lp in zip(candidates, logps, strict=True)
    ]
    return sorted(mixed, key=lambda c: c.total, reverse=True)


class InputMethod:
    """Typed pinyin -> ranked candidates: the lattice cut to each syllable's likeliest characters, searched
    with a beam, optionally reranked by a neural model."""

    def __init__(
        self,
        scorer: Scorer,
        per_syllable: int = 24,
        beam: int = 32,
        neural: NeuralScorer | None = None,
        neural_weight: float = 1.0,
    ) -> None:
        self.scorer, self.per_syllable, self.beam = scorer, per_syllable, beam
        self.neural, self.neural_weight = neural, neural_weight
        self.unigram = Memo(scorer)

    def rank(self, char: str) -> float:
        """A character's unigram log-probability: which of a syllable's characters to keep."""
        return self.unigram.logprob(char, ())

    def lattice(self, text: str) -> Lattice:
        return build_lattice(read_pinyin(text), rank=self.rank, per_syllable=self.per_syllable)

    def best(self, text: str) -> Candidate:
        """The exact best writing under the n-gram model alone."""
        return viterbi(self.lattice(text), self.scorer)

    def candidates(self, text: str, top: int = 5) -> list[Candidate]:
        """The `top` best distinct writings of `text`, best first, by beam search (Viterbi's cost grows with
        the cube of the characters per syllable under a trigram; the beam's only linearly); with a neural
        model, the whole beam is reranked before it is cut to `top`."""
        width = max(self.beam, top)
        found = beam_search(self.lattice(text), self.scorer, width, width)
        if self.neural is not None:
            found = rescore(found, self.neural, self.neural_weight)
        return found[:top]
