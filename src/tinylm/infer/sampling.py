"""Turning next-token logits into the next token: penalties, temperature, truncation, a seeded draw.

Every row of a batch carries its own `SamplingParams`, so the server can decode requests with different
settings together. The work is vectorised over the batch; only the final random draw runs per row, with
each row's own generator, so a seeded request gives the same tokens whatever it is batched with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import TinyLMError


@dataclass
class SamplingParams:
    """How to decode: the one set of sampling options and defaults for generate, chat, serve and Python.

    The defaults are OpenAI's where OpenAI has one, because `tinylm serve` fills every field a request
    omits from these (or from its own `--sampling.*`), and clients written for OpenAI's API expect
    temperature 1 and top_p 1 when they send neither: the model's own distribution, which is also what
    RL and KL measurements need. In a terminal, `--sampling.temperature 0` decodes greedily (the same text
    every time). max_new_tokens=128 leaves room for a prompt on the smallest models tinylm trains
    (context 256) and is enough for a short reply; the server shrinks it to the room the context leaves
    when a request omits max_tokens. A value out of range raises a TinyLMError naming the field when the
    options are built, so a bad `--sampling.top_p 2` fails before any model is loaded.
    """

    max_new_tokens: int = 128
    """Most tokens to generate (a completion also ends at a stop token or string, or the context's end)."""
    temperature: float = 1.0
    """Divide the logits by this before sampling; 0 decodes greedily (argmax after penalties)."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Keep the smallest set of most likely tokens whose probability sums to at least top_p."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely token."""
    repetition_penalty: float = 1.0
    """CTRL-style: divide positive (multiply negative) logits of tokens seen in prompt or output."""
    presence_penalty: float = 0.0
    """OpenAI-style: subtract this from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """OpenAI-style: subtract this times the count of each token already generated."""
    seed: int | None = None
    """Seed of the random draws (prompt i of a batch uses seed + i); none draws afresh every run."""
    stop: list[str] = field(default_factory=list)
    """Strings that end the completion (left out of its text); at most 4."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end the completion, besides the model's end-of-text and end-of-turn tokens."""
    ignore_eos: bool = False
    """Keep going past the model's end-of-text and end-of-turn tokens (for benchmarks and tests)."""
    top_logprobs: int = 0
    """Also report this many most likely alternatives (with log-probabilities) at each step."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    def validate(self) -> SamplingParams:
        """Raise a TinyLMError naming the first out-of-range field; return self for chaining."""
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer >= 1"),
            ("temperature", 0 <= self.temperature <= 100, "a number in [0, 100]"),
            ("top_k", self.top_k >= 0, "an integer >= 0 (0 disables it)"),
            ("top_p", 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("min_p", 0 <= self.min_p < 1, "a number in [0, 1)"),
            ("repetition_penalty", 0 < self.repetition_penalty <= 10, "a number in (0, 10]"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "a number in [-2, 2]"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "a number in [-2, 2]"),
            ("top_logprobs", 0 <= self.top_logprobs <= 20, "an integer in [0, 20]"),
            (
                "stop",
                isinstance(self.stop, list) and len(self.stop) <= 4 and all(self.stop),
                "a list of at most 4 non-empty strings",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise TinyLMError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        return self

    def make_generator(self) -> torch.Generator | None:
        """A generator seeded by `seed`, or None to draw from torch's global generator."""
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)


def apply_penalties(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seen: list[torch.Tensor],
    generated: list[torch.Tensor],
) -> torch.Tensor:
    """Penalise repeats in place. `seen[i]` holds prompt and output ids of row i, `generated[i]` output only."""
    for i, p in enumerate(params):
        if not p.uses_penalties:
            continue
        row = logits[i]
        if p.repetition_penalty != 1 and len(seen[i]):
            ids = seen[i].unique()
            vals = row[ids]
            row[ids] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and len(generated[i]):
            counts = torch.bincount(generated[i], minlength=row.shape[0]).to(row.dtype)
            row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
    return logits


def filter_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Scale by temperature, then mask (to -inf) tokens cut by top-k, top-p and min-p."""
    device, finite = logits.device, torch.finfo(logits.dtype)
    temps = torch.tensor([p.temperature or 1.0 for p in params], device=device, dtype=logits.dtype)
    # Shifted so the top logit is 0 and the rest finite or -inf however small the temperature (or however
    # large a penalty made a logit): the softmax never sees inf - inf.
    logits = logits.clamp(-finite.max, finite.max)
    logits = (logits - logits.amax(-1, keepdim=True)) / temps.clamp_min(finite.tiny)[:, None]
    top_k = torch.tensor([p.top_k or logits.shape[-1] for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device, dtype=logits.dtype)
    if bool((top_k < logits.shape[-1]).any() or (top_p < 1).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        rank = torch.arange(logits.shape[-1], device=device)[None]
        cut = rank >= top_k[:, None]
        probs = sorted_logits.masked_fill(cut, float("-inf")).softmax(-1)
        # Drop a token once the mass strictly before it already reaches top_p (the top token always stays).
        cut |= (probs.cumsum(-1) - probs) >= top_p[:, None]
        cut[:, 0] = False  # even a top_p that rounds to 0
        logits = logits.masked_fill(torch.zeros_like(cut).scatter(1, order, cut), float("-inf"))
    min_p = torch.tensor([p.min_p for p in params], device=device, dtype=logits.dtype)
    if bool((min_p > 0).any()):
        probs = logits.softmax(-1)
        logits = logits.masked_fill(
            probs < min_p[:, None] * probs.max(-1, keepdim=True).values, float("-inf")
        )
    return logits


def token_distribution(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seen: list[torch.Tensor],
    generated: list[torch.Tensor],
) -> torch.Tensor:
    """The distribution (B, V) each row's next token is drawn from, given raw logits (B, V) and each row's
    settings and history: penalties, then temperature and truncation; a greedy row's is one-hot on its
    argmax. Plain sampling draws from it and speculative decoding verifies draft tokens against it."""
    if any(p.uses_penalties for p in params):
        logits = apply_penalties(logits.clone(), params, seen, generated)
    probs = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if sampled:
        probs[sampled] = filter_logits(logits[sampled], [params[i] for i in sampled]).softmax(-1).float()
    return probs


def draw(probs: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> int:
    """One token from a row of `token_distribution`: its argmax when greedy (no random draw), else a sample."""
    if greedy:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    seen: list[torch.Tensor],
    generated: list[torch.Tensor],
) -> torch.Tensor:
    """The next token of every row (B,), from raw logits (B, V) and each row's settings and history."""
    if all(p.greedy for p in params):  # the argmax after penalties: no distribution to build and draw from
        if any(p.uses_penalties for p in params):
            logits = apply_penalties(logits.clone(), params, seen, generated)
        return logits.argmax(-1).cpu()
    probs = token_distribution(logits, params, seen, generated)
    rows = zip(probs, params, generators, strict=True)
    return torch.tensor([draw(row, p.greedy, g) for row, p, g in rows], dtype=torch.long)
