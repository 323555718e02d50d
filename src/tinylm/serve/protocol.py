"""The OpenAI wire format: request bodies, their mapping to `SamplingParams`, responses and errors.

Requests are validated here so that every user mistake becomes an `APIError` with OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`) and the right status, never a 500.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import TinyLMError
from ..infer.engine import Sequence
from ..infer.sampling import SamplingParams


class APIError(Exception):
    """An error response: HTTP status plus OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


SAME_NAMES = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "top_k", "min_p",
              "repetition_penalty", "ignore_eos")  # fmt: skip
"""Request fields named as the SamplingParams field they set."""


class _Request(BaseModel):
    """Fields shared by both endpoints; top_k, min_p, repetition_penalty and ignore_eos extend OpenAI's.

    Every sampling field a request omits (or sends as null) takes the server's default, which is
    `SamplingParams()`'s unless `tinylm serve --sampling.*` changed it; so temperature and top_p default
    to 1 as in OpenAI's API. An omitted max_tokens means the server's `max_new_tokens`, shrunk to the room
    the prompt leaves in the context (so it never fails for length); an explicit one that does not fit
    is a 400.
    """

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, description="Choices to generate; they share one prefill of the prompt.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        """JSON null means "use the default", as in OpenAI's API."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sampling(
        self, defaults: SamplingParams, max_new_tokens: int, top_logprobs: int | None
    ) -> SamplingParams:
        """The server's `defaults` with every field this request sets replaced by the request's value
        (`top_logprobs` None keeps the default)."""
        given = {k: getattr(self, k) for k in SAME_NAMES if getattr(self, k) is not None}
        if self.stop is not None:
            given["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if top_logprobs is not None:
            given["top_logprobs"] = top_logprobs
        try:
            return replace(defaults, max_new_tokens=max_new_tokens, **given)
        except TinyLMError as e:
            raise APIError(400, str(e), param=str(e).split()[0]) from None


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def invalid(errors: list[dict[str, Any]]) -> APIError:
    """The 400 for a request body the models reject, naming the field of the first problem (FastAPI's error
    locations start with "body", which is not part of the field's name)."""
    err = errors[0]
    loc = err["loc"][1:] if err["loc"][:1] == ("body",) else err["loc"]
    where = ".".join(str(p) for p in loc)
    return APIError(400, f"{where}: {err['msg']}" if where else err["msg"], param=where or None)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(seqs: list[Sequence]) -> dict[str, int]:
    """Token counts of one request's choices: they share the prompt, which counts once."""
    n_in, n_out = len(seqs[0].prompt_ids), sum(len(s.token_ids) for s in seqs)
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def completion_logprobs(seq: Sequence, tokenizer, start: int, end: int) -> dict[str, Any]:
    """Legacy completions logprobs for tokens start..end: tokens, token_logprobs, top_logprobs."""
    ids = seq.token_ids[start:end]
    return {
        "tokens": [tokenizer.decode([i]) for i in ids],
        "token_logprobs": seq.logprobs[start:end],
        "top_logprobs": [
            {tokenizer.decode([i]): lp for i, lp in top.items()} for top in seq.top_logprobs[start:end]
        ]
        or None,
        "text_offset": None,
    }


def chat_logprobs(seq: Sequence, tokenizer, start: int, end: int) -> dict[str, Any]:
    """Chat logprobs for tokens start..end: one entry per token, with its alternatives."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = []
    for k in range(start, end):
        item = entry(seq.token_ids[k], seq.logprobs[k])
        tops = seq.top_logprobs[k] if k < len(seq.top_logprobs) else {}
        item["top_logprobs"] = [entry(i, lp) for i, lp in tops.items()]
        content.append(item)
    return {"content": content}


def envelope(kind: str, rid: str, model: str, choices: list[dict], **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


# Response bodies, for /openapi.json (handlers build plain dicts in exactly these shapes).
FinishReason = Literal["stop", "length", "cancelled"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
