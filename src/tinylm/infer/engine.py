"""The generation engine: prefill prompts in one pass, then decode them together with a KV cache.

`Engine.generate` is the batch API (CLI, evaluation, RL rollouts): prompts of any lengths in, finished
`Sequence`s out, each with its token ids, per-token log-probabilities and text. `Engine.stream` yields one
prompt's text as it is produced. Both run on `Batch`, which the server's scheduler also drives one step at
a time so that requests can join and leave between decode steps (continuous batching).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import TinyLMError
from ..models.base import Backbone, Cache
from ..models.components.attention import stepwise_attention
from ..models.registry import require_generative
from .sampling import SamplingParams, choose_tokens, token_distribution
from .speculative import Speculator, verify
from .text import TextStream


@dataclass(eq=False)
class Sequence:
    """One prompt being decoded, and what it has produced so far.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the model's own distribution (raw logits,
    before penalties, temperature or truncation), which is what RL objectives need. A stop token ends the
    sequence and is kept in `token_ids` (it is what the model chose) but not in `text`.
    """

    prompt_ids: list[int]
    params: SamplingParams
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    """None while running; "stop" (stop token or string), "length" (max_new_tokens or context), "cancelled"."""
    stream: TextStream | None = field(default=None, repr=False)
    generator: torch.Generator | None = field(default=None, repr=False)
    stop_ids: frozenset[int] = field(default=frozenset(), repr=False)
    drafted: int = 0
    """Draft tokens speculative decoding proposed for this sequence (`tinylm.infer.speculative`)."""
    accepted: int = 0
    """How many of them the model accepted."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Engine:
    """A model of any family and its tokenizer, ready to generate.

    The engine sees the model only through `Backbone` (`model(ids, attention_mask, cache=..., keep=1)`,
    `new_cache`, `device`, `config.max_seq_len`) and its cache only through `Cache` (`keep`, `merge`,
    `truncate`). A `speculator` (`tinylm.infer.speculative`) makes a batch of one sequence decode several
    tokens per forward pass; the output keeps the distribution of plain decoding.
    """

    def __init__(
        self, model: Backbone, tokenizer, max_batch_size: int = 16, speculator: Speculator | None = None
    ) -> None:
        require_generative(model.config, "generation (tinylm generate, chat, serve, sampled evaluation, RL)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.speculator = speculator
        self.context = model.config.max_seq_len
        self.quantization = None  # what load(quantize="int4") did: a tinylm.models.quant.Int4Report
        ends = (tokenizer.eos_id, self._end_of_turn_id(), tokenizer.token_to_id("<|endoftext|>"))
        self.stop_ids = frozenset(i for i in ends if i is not None)

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", max_batch_size: int = 16, quantize: str = "none"
    ) -> Engine:
        """An engine for the checkpoint directory `path` (model + tokenizer files).

        quantize="int4" stores the Transformer blocks' weights as int4 (`tinylm.models.quant`), which
        decodes several times faster on a CPU; the report of what it did is kept in `self.quantization`.
        """
        from ..models import load_model
        from ..models.quant import Int4Quantizer
        from ..tokenizer import Tokenizer

        if quantize not in ("none", "int4"):
            raise TinyLMError(f"quantize must be 'none' or 'int4', got {quantize!r}")
        tokenizer = Tokenizer.load(path)
        quantizer = Int4Quantizer() if quantize == "int4" else None
        model = load_model(path, convert=quantizer)  # quantised block by block as it loads
        if quantizer:
            quantizer.finish(model)
        engine = cls(model.to(device), tokenizer, max_batch_size)
        engine.quantization = quantizer.report if quantizer else None
        return engine

    def _end_of_turn_id(self) -> int | None:
        """The token the chat template puts after an assistant reply (e.g. <|im_end|>), if there is one."""
        try:
            pair = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\x07"}]
            rendered = self.tokenizer.apply_chat_template(pair, add_generation_prompt=False)
        except Exception:  # a tokenizer without a chat template simply has no end-of-turn token
            return None
        tail = rendered.split("\x07", 1)[-1]
        ids = [i for i in self.tokenizer.encode(tail) if i != self.tokenizer.bos_id] if tail.strip() else []
        return ids[0] if ids else None

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, without special tokens (as OpenAI-style servers return it)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The model's chat template applied to `messages`, ending where the assistant's reply begins."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def sequence(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        """A new Sequence for `prompt` (text or token ids), checked against the model's context length."""
        params = (params or SamplingParams()).validate()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise TinyLMError("the prompt is empty: it must contain at least one token")
        if len(ids) + params.max_new_tokens > self.context:
            raise TinyLMError(
                f"this model's context is {self.context} tokens, but the prompt has {len(ids)} tokens and "
                f"{params.max_new_tokens} new tokens were requested ({len(ids) + params.max_new_tokens} in all)"
            )
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.stop_ids)
        return Sequence(
            ids,
            params,
            stream=TextStream(self.decode, params.stop),
            generator=params.make_generator(),
            stop_ids=stop_ids,
        )

    def complete(self, text: str, params: SamplingParams) -> str:
        """`text` and its continuation; the prompt is cut from the left to leave room for the new tokens, and
        an empty one starts a new document (after EOS)."""
        ids = self.tokenizer.encode(text) if text else [self.tokenizer.eos_id]
        ids = ids[-max(1, self.context - params.max_new_tokens) :]
        room = replace(params, max_new_tokens=min(params.max_new_tokens, self.context - len(ids)))
        return text + self.generate([ids], room)[0].text

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[Sequence]:
        """Decode every prompt to the end, up to `max_batch_size` at a time, refilling freed rows.

        One `params` for all prompts with a seed gives row i the seed `seed + i`, so repeated prompts (e.g.
        a GRPO group) draw different samples while the whole call stays reproducible.
        """
        if not isinstance(params, list):
            base = params or SamplingParams()
            params = [base] * len(prompts)
            if base.seed is not None:
                params = [replace(base, seed=base.seed + i) for i in range(len(prompts))]
        seqs = [self.sequence(p, sp) for p, sp in zip(prompts, params, strict=True)]
        pending, batch = list(seqs), Batch(self)
        while pending or batch.seqs:
            room = self.max_batch_size - len(batch.seqs)
            if pending and room > 0:
                batch.add(pending[:room])
                pending = pending[room:]
            else:
                batch.step()
        return seqs

    def stream(self, seq: Sequence) -> Iterator[str]:
        """Decode `seq` alone, yielding text as soon as it is complete; `seq` holds the result afterwards."""
        batch = Batch(self)
        for _, delta in batch.add([seq]):
            if delta:
                yield delta
        while batch.seqs:
            for _, delta in batch.step():
                if delta:
                    yield delta


def sample(model: Backbone, tokenizer, prompts: list[list[int]], params: SamplingParams) -> list[Sequence]:
    """Decode every prompt in one batch (row i uses `params.seed + i`); the model's train / eval mode is
    restored afterwards, so a training stage can sample from the model it trains."""
    was_training = model.training
    seqs = Engine(model, tokenizer, max_batch_size=max(1, len(prompts))).generate(prompts, params)
    model.train(was_training)
    return seqs


def _room(seqs: list[Sequence]) -> int:
    """Positions to reserve in a cache for the next tokens of `seqs`: the cache grows as needed, so a long
    max_new_tokens costs no memory up front."""
    return min(128, max(s.params.max_new_tokens - len(s.token_ids) for s in seqs))


class Prefill:
    """Prompts being read into a cache of their own before they join a `Batch` (`Batch.join`).

    `feed` reads the next columns of the left-padded prompts. A model that reads a prompt in parts exactly as
    in one pass (`Backbone.chunked_prefill`: a causal decoder) may take it a chunk at a time, so a server can
    put decode steps of its running streams between the chunks of a long prompt. Repeated prompts (a
    request's n choices, a GRPO group) are read once; their rows are copied when they join.
    """

    @torch.inference_mode()
    def __init__(self, model: Backbone, seqs: list[Sequence]) -> None:
        self.model, self.seqs = model, seqs
        first: dict[tuple[int, ...], int] = {}
        self.rows = [first.setdefault(tuple(s.prompt_ids), len(first)) for s in seqs]
        n = max(map(len, first))
        self.ids = torch.zeros(len(first), n, dtype=torch.long, device=model.device)
        self.mask = torch.zeros(len(first), n, dtype=torch.long, device=model.device)
        for i, prompt in enumerate(first):
            self.ids[i, n - len(prompt) :] = torch.tensor(prompt)
            self.mask[i, n - len(prompt) :] = 1
        self.cache = model.new_cache(len(first), n + _room(seqs))
        self.read = 0
        """Columns read so far."""
        self.logits: torch.Tensor | None = None
        """Next-token logits of each distinct prompt (rows, vocab), once the last column is read."""

    @property
    def finished(self) -> bool:
        return self.read == self.ids.shape[1]

    @torch.inference_mode()
    def feed(self, columns: int | None = None) -> None:
        """Read the next `columns` columns of every prompt; all that are left when None, or when the model
        can only read a prompt in one pass."""
        end = self.ids.shape[1]
        if columns is not None and self.model.chunked_prefill:
            end = min(end, self.read + max(1, columns))
        ids, mask = self.ids[:, self.read : end], self.mask[:, self.read : end]
        self.logits = self.model(ids, attention_mask=mask, cache=self.cache, keep=1)[:, -1]
        self.read = end


class Batch:
    """The sequences decoding together and their shared cache; `add` (or a `Prefill` and `join`) and `step`
    advance them.

    Both return `(sequence, new_text)` for every sequence that produced a token. Finished sequences leave
    the batch (and the cache) at once.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seqs: list[Sequence] = []
        self.cache: Cache | None = None

    def add(self, seqs: list[Sequence]) -> list[tuple[Sequence, str]]:
        """Prefill `seqs` together in one forward pass (left-padded; repeated prompts once), sample their first
        tokens, join."""
        prefill = Prefill(self.engine.model, seqs)
        prefill.feed()
        return self.join(prefill)

    @torch.inference_mode()
    def join(self, prefill: Prefill) -> list[tuple[Sequence, str]]:
        """Take in the sequences of a finished `prefill` that are still live, sampling their first tokens."""
        live = [i for i, s in enumerate(prefill.seqs) if not s.finished]  # a cancelled one has no row here
        if not live:
            return []
        seqs = [prefill.seqs[i] for i in live]
        rows, cache, logits = [prefill.rows[i] for i in live], prefill.cache, prefill.logits
        if rows != list(range(cache.batch_size)):  # repeated prompts read once, or cancelled rows
            cache.keep(rows)
            logits = logits[rows]
        room = _room(seqs + self.seqs)
        if self.cache is None:
            self.cache = cache
        else:
            self.cache.merge(cache, max(self.cache.length, cache.length) + room)
        self.seqs += seqs
        return self._advance(seqs, logits)

    @torch.inference_mode()
    def step(self) -> list[tuple[Sequence, str]]:
        """Feed every sequence its last token and sample the next one (or several, when speculating)."""
        if self.engine.speculator is not None and len(self.seqs) == 1:
            out = self._speculate(self.seqs[0], self.engine.speculator)
            if out is not None:
                return out
        model = self.engine.model
        ids = torch.tensor([[s.token_ids[-1]] for s in self.seqs], device=model.device)
        logits = model(ids, attention_mask=torch.ones_like(ids), cache=self.cache, keep=1)[:, -1]
        return self._advance(self.seqs, logits)

    def _speculate(self, seq: Sequence, speculator: Speculator) -> list[tuple[Sequence, str]] | None:
        """Verify the speculator's draft for `seq` in one forward pass and emit the tokens it keeps (the
        accepted draft tokens and one more from the model); None when there is no draft to verify.

        Only a batch of one speculates: on a CPU several sequences already share each read of the weights,
        which is what speculation buys a single one."""
        room = seq.params.max_new_tokens - len(seq.token_ids) - 1  # the model's own token always follows
        ids, k = seq.prompt_ids + seq.token_ids, min(speculator.tokens, room)
        draft = speculator.propose(ids, len(seq.prompt_ids), seq.params, seq.generator, k) if k > 0 else None
        if draft is None:
            return None
        model, start, k, n = self.engine.model, self.cache.length, len(draft.tokens), len(ids)
        x = torch.tensor([[ids[-1], *draft.tokens]], device=model.device)
        # Greedy: row i's logits bitwise those a one-token step would give, so near-ties break alike. A sampled
        # run keeps the distribution either way, so it skips the slower query-by-query attention.
        with stepwise_attention() if seq.params.greedy else contextlib.nullcontext():
            logits = model(x, attention_mask=torch.ones_like(x), cache=self.cache, keep=k + 1)[0]
        seen, generated = [], []
        if seq.params.uses_penalties:  # position i has seen the first i draft tokens
            full = torch.tensor(ids + draft.tokens, device=logits.device)
            seen = [full[: n + i] for i in range(k + 1)]
            generated = [full[len(seq.prompt_ids) : n + i] for i in range(k + 1)]
        probs = token_distribution(logits, [seq.params] * (k + 1), seen, generated)
        tokens = verify(probs, draft, seq.params.greedy, seq.generator)
        seq.drafted, seq.accepted = seq.drafted + k, seq.accepted + len(tokens) - 1
        self.cache.truncate(start + len(tokens))  # the last token emitted is fed by the next step
        logp = logits.float().log_softmax(-1)
        delta = ""
        for i, tok in enumerate(tokens):
            delta += self._emit(seq, tok, logp[i])
            if seq.finished:
                break
        self._drop_finished()
        return [(seq, delta)]

    @torch.inference_mode()  # dropping its row moves others within the cache's (inference) tensors
    def cancel(self, seq: Sequence) -> None:
        """End `seq` now (its client went away), freeing its row if it has one."""
        if not seq.finished:
            seq.finish_reason = "cancelled"
            self._drop_finished()

    def _advance(self, seqs: list[Sequence], logits: torch.Tensor) -> list[tuple[Sequence, str]]:
        """Sample one token for each of `seqs` (the rows of `logits`), update their text, drop finished ones."""
        params = [s.params for s in seqs]
        logp = logits.float().log_softmax(-1)
        penalised = [i for i, p in enumerate(params) if p.uses_penalties]
        empty = torch.empty(0, dtype=torch.long)
        seen, generated = [empty] * len(seqs), [empty] * len(seqs)
        for i in penalised:
            generated[i] = torch.tensor(seqs[i].token_ids, dtype=torch.long, device=logits.device)
            seen[i] = torch.tensor(
                seqs[i].prompt_ids + seqs[i].token_ids, dtype=torch.long, device=logits.device
            )
        tokens = choose_tokens(logits, params, [s.generator for s in seqs], seen, generated).tolist()
        out = [(s, self._emit(s, tok, logp[i])) for i, (s, tok) in enumerate(zip(seqs, tokens, strict=True))]
        self._drop_finished()
        return out

    @staticmethod
    def _emit(s: Sequence, tok: int, logp: torch.Tensor) -> str:
        """Append `tok` (with its log-probability under `logp`) to `s`; end `s` at a stop or its length;
        return the text it completes."""
        s.logprobs.append(float(logp[tok]))
        if s.params.top_logprobs:
            vals, idx = logp.topk(s.params.top_logprobs)
            s.top_logprobs.append(dict(zip(idx.tolist(), vals.tolist(), strict=True)))
        s.token_ids.append(tok)  # last, so a reader on another thread never sees a token without logprob
        if tok in s.stop_ids:
            delta, s.finish_reason = s.stream.finish(), "stop"
        else:
            delta = s.stream.push(tok)
            if s.stream.stopped:
                s.finish_reason = "stop"
            elif len(s.token_ids) >= s.params.max_new_tokens:
                delta, s.finish_reason = delta + s.stream.finish(), "length"
        s.text = s.stream.text[: s.stream.sent]
        return delta

    def _drop_finished(self) -> None:
        """Fill each finished row among the first `len(live)` with a live row from beyond them, so the cache
        moves only those rows (`KVCache.keep`); the order of `self.seqs` follows."""
        live = [i for i, s in enumerate(self.seqs) if not s.finished]
        if len(live) == len(self.seqs):
            return
        if not live:
            self.seqs, self.cache = [], None
            return
        movers = [i for i in live if i >= len(live)]
        keep = [i if not self.seqs[i].finished else movers.pop() for i in range(len(live))]
        self.seqs = [self.seqs[i] for i in keep]
        self.cache.keep(keep)
