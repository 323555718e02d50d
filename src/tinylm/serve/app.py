"""`tinylm serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and a web chat page at `/`.

Handlers only translate: they take the request as validated by FastAPI against `protocol`'s models (which
`/openapi.json` therefore describes), hand its n `Sequence`s to the `Scheduler` (which batches all requests
on one decode thread), and stream their text back as server-sent events or collect it into one JSON response.
The /v1 routes check the API key and read the body within its size limit before FastAPI parses it, and every
error keeps OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ..errors import TinyLMError
from ..infer.engine import Engine, Sequence
from ..infer.sampling import SamplingParams
from ..infer.speculative import make_speculator
from .protocol import (
    APIError,
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    chat_logprobs,
    completion_logprobs,
    envelope,
    invalid,
    new_id,
    usage,
)
from .scheduler import Job, QueueFull, Scheduler

STATIC = Path(__file__).parent / "static"


def responses(reply: type) -> dict[int | str, dict[str, Any]]:
    """What a generating route answers, for /openapi.json: `reply` as JSON, or server-sent events of its
    chunks when the request streams; every error in OpenAI's shape."""
    errors = {
        400: "the request is invalid (the message names the field)",
        401: "the API key is missing or wrong",
        404: "the model does not exist",
        413: "the request body is too large",
        429: "the queue is full; retry after Retry-After seconds",
        500: "generation failed",
    }
    event = {  # before OpenAPI 3.2, an event stream's `schema` describes each event
        "type": "object",
        "properties": {
            "data": {"type": "string", "description": "a chunk as JSON, and `[DONE]` at the end"},
            "event": {"type": "string"},
        },
        "required": ["data"],
    }
    out: dict[int | str, dict[str, Any]] = {
        200: {"model": reply, "content": {"text/event-stream": {"schema": event}}}
    }
    out.update({status: {"model": ErrorResponse, "description": why} for status, why in errors.items()})
    out[429]["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return out


def create_app(
    engine: Engine,
    model_name: str,
    api_key: str | None = None,
    max_batch: int = 32,
    max_queue: int = 512,
    max_body_bytes: int = 1_000_000,
    threads: int | None = None,
    sampling: SamplingParams | None = None,
    max_prefill_tokens: int = 512,
) -> FastAPI:
    """The server application; its decode thread runs while the app's lifespan does.

    `sampling` holds the defaults for every sampling field a request omits (`SamplingParams()` if None).
    """
    defaults = sampling or SamplingParams()
    scheduler = Scheduler(engine, max_batch, max_queue, threads, max_prefill_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        scheduler.start()
        yield
        scheduler.stop()

    settings = ", ".join(f"{k}={v!r}" for k, v in asdict(defaults).items())
    about = (
        f"OpenAI-compatible API. A sampling field a request omits takes this server's default: {settings}."
    )
    app = FastAPI(title="tinylm", description=about, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its 422 responses: validation errors are 400s here (`responses`)."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        headers = {**e.headers, "WWW-Authenticate": "Bearer"} if e.status == 401 else e.headers
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return await _api_error(request, invalid(list(e.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse(APIError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        body = APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
            )

    async def json_request(request: Request) -> Request:
        """The request with its body read within the size limit and checked to be a JSON object; FastAPI
        then parses it as JSON whatever Content-Type the client sent (as OpenAI's API does)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}")
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
        request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
        replayed = False

        async def receive() -> dict[str, Any]:
            nonlocal replayed
            if replayed:  # later calls are is_disconnected()'s
                return await request.receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return Request(request.scope, receive)

    class GuardedRoute(APIRoute):
        """A /v1 route: the API key is checked, then a POST's body read, before FastAPI validates it."""

        def get_route_handler(self) -> Callable:
            handle = super().get_route_handler()

            async def guarded(request: Request):
                authorize(request)
                return await handle(await json_request(request) if request.method == "POST" else request)

            return guarded

    v1 = APIRouter(route_class=GuardedRoute)

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(
                404,
                f"model {name!r} does not exist; this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )

    def start(
        prompt: str | list[int],
        req: CompletionRequest | ChatRequest,
        max_tokens: int | None,
        top_logprobs: int | None,
    ) -> Job:
        """Queue the request's n sequences (choice i seeded with seed + i); an omitted `max_tokens` is the
        default shrunk to fit the context."""
        if req.n > max_batch:
            raise APIError(
                400, f"n must be at most {max_batch} (the server's max_batch), got {req.n}", param="n"
            )
        ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        if max_tokens is None:
            max_tokens = max(1, min(defaults.max_new_tokens, engine.context - len(ids)))
        if len(ids) + max_tokens > engine.context:
            raise APIError(
                400,
                f"this model's maximum context length is {engine.context} tokens, but you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion)",
                param="max_tokens",
                code="context_length_exceeded",
            )
        params = req.sampling(defaults, max_tokens, top_logprobs)
        seeds = [None if params.seed is None else params.seed + i for i in range(req.n)]
        try:
            seqs = [engine.sequence(ids, replace(params, seed=seed)) for seed in seeds]
        except TinyLMError as e:
            raise APIError(400, str(e)) from None
        try:
            return scheduler.submit(seqs)
        except QueueFull as e:
            retry = {"Retry-After": str(e.retry_after)}
            raise APIError(
                429, str(e), type="rate_limit_exceeded", code="queue_full", headers=retry
            ) from None

    async def finish(job: Job, request: Request) -> list[Sequence]:
        """Wait for the whole reply; cancel it if the client hangs up first."""
        drain = asyncio.ensure_future(_drain(job))
        try:
            while not drain.done():
                await asyncio.wait({drain}, timeout=0.25)
                if not drain.done() and await request.is_disconnected():
                    break
        finally:
            if not drain.done():
                drain.cancel()
                scheduler.cancel(job)
        if job.error:
            raise APIError(500, f"generation failed: {job.error}", type="server_error")
        return job.seqs

    def sse(job: Job, chunks: AsyncIterator[dict]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                if job.error:
                    yield f"data: {json.dumps(APIError(500, job.error, type='server_error').body())}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                scheduler.cancel(job)  # frees the slot at once when the client goes away mid-stream

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, **scheduler.counts}

    @v1.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": model_name,
            "object": "model",
            "created": 0,
            "owned_by": "tinylm",
            "max_model_len": engine.context,
            "default_sampling": asdict(defaults),  # what a request's omitted sampling fields become
        }
        return {"object": "list", "data": [card]}

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @v1.post("/v1/completions", responses=responses(Completion))
    async def completions(request: Request, req: CompletionRequest):
        """OpenAI's legacy completions: continue `prompt` (text or token ids), n times.

        Omitted sampling fields take the server's defaults (listed in the API description); an omitted
        max_tokens is the default max_new_tokens shrunk to the room the prompt leaves in the context,
        not OpenAI's 16.
        """
        check_model(req.model)
        if req.echo:
            raise APIError(400, "echo is not supported", param="echo")
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, f"send one prompt per request, got {len(prompt)}", param="prompt")
            prompt = prompt[0]
        if not prompt:
            raise APIError(400, "prompt is empty", param="prompt")
        if isinstance(prompt, list) and not all(0 <= t < engine.tokenizer.vocab_size for t in prompt):
            raise APIError(
                400, f"prompt token ids must lie in [0, {engine.tokenizer.vocab_size})", param="prompt"
            )
        job = start(prompt, req, req.max_tokens, req.logprobs or 0)
        rid, tok = new_id("cmpl"), engine.tokenizer

        def choice(i: int, text: str, start: int, end: int, reason: str | None) -> dict:
            seq = job.seqs[i]
            lp = completion_logprobs(seq, tok, start, end) if req.logprobs is not None else None
            return {"index": i, "text": text, "logprobs": lp, "finish_reason": reason}

        if not req.stream:
            seqs = await finish(job, request)
            choices = [choice(i, s.text, 0, len(s.token_ids), s.finish_reason) for i, s in enumerate(seqs)]
            return JSONResponse(envelope("text_completion", rid, model_name, choices, usage=usage(seqs)))

        async def chunks() -> AsyncIterator[dict]:
            sent = [0] * len(job.seqs)
            async for i, delta in job.deltas():
                seq, end = job.seqs[i], len(job.seqs[i].token_ids)  # the decode thread may append meanwhile
                reason = seq.finish_reason if delta is None else None
                yield envelope(
                    "text_completion", rid, model_name, [choice(i, delta or "", sent[i], end, reason)]
                )
                sent[i] = end
            if req.include_usage and not job.error:
                yield envelope("text_completion", rid, model_name, [], usage=usage(job.seqs))

        return sse(job, chunks())

    @v1.post("/v1/chat/completions", responses=responses(ChatCompletion))
    async def chat_completions(request: Request, req: ChatRequest):
        """OpenAI's chat completions: n replies of the assistant to `messages`, through the model's chat template.

        Omitted sampling fields take the server's defaults (listed in the API description); an omitted
        max_completion_tokens / max_tokens is the default max_new_tokens shrunk to the room the prompt
        leaves in the context.
        """
        check_model(req.model)
        try:
            prompt = engine.chat_prompt([m.plain() for m in req.messages])
        except Exception as e:  # the template itself rejects the conversation (e.g. roles out of order)
            raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from None
        top = req.top_logprobs if req.logprobs else 0  # None: the server's default
        job = start(prompt, req, req.max_completion_tokens or req.max_tokens, top)
        rid, tok = new_id("chatcmpl"), engine.tokenizer

        def logprobs(seq: Sequence, start: int, end: int) -> dict | None:
            return chat_logprobs(seq, tok, start, end) if req.logprobs else None

        if not req.stream:
            seqs = await finish(job, request)
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": s.text},
                    "logprobs": logprobs(s, 0, len(s.token_ids)),
                    "finish_reason": s.finish_reason,
                }
                for i, s in enumerate(seqs)
            ]
            return JSONResponse(envelope("chat.completion", rid, model_name, choices, usage=usage(seqs)))

        async def chunks() -> AsyncIterator[dict]:
            for i in range(len(job.seqs)):
                first = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}  # fmt: skip
                yield envelope("chat.completion.chunk", rid, model_name, [first])
            sent = [0] * len(job.seqs)
            async for i, delta in job.deltas():
                seq, end = job.seqs[i], len(job.seqs[i].token_ids)  # the decode thread may append meanwhile
                choice = {
                    "index": i,
                    "delta": {"content": delta} if delta else {},
                    "logprobs": logprobs(seq, sent[i], end),
                    "finish_reason": seq.finish_reason if delta is None else None,
                }
                sent[i] = end
                yield envelope("chat.completion.chunk", rid, model_name, [choice])
            if req.include_usage and not job.error:
                yield envelope("chat.completion.chunk", rid, model_name, [], usage=usage(job.seqs))

        return sse(job, chunks())

    app.include_router(v1)
    return app


async def _drain(job: Job) -> None:
    async for _ in job.deltas():
        pass


def serve(
    model: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    max_batch: int = 32,
    max_queue: int = 512,
    max_body_bytes: int = 1_000_000,
    device: str = "cpu",
    quantize: Literal["none", "int4"] = "none",
    threads: int | None = None,
    sampling: SamplingParams | None = None,
    speculative: Literal["none", "lookup", "draft"] = "none",
    draft_model: Path | None = None,
    draft_tokens: int = 4,
    max_prefill_tokens: int = 512,
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API, with a chat page at `/`.

    A request's sampling fields override the server's `--sampling` defaults one by one; an omitted
    max_tokens means `--sampling.max_new_tokens`, shrunk to the room the prompt leaves in the context.
    A request's `n` choices share one prefill of its prompt. `/openapi.json` describes every request body.

    Args:
        model: Checkpoint directory (model weights, config and tokenizer files).
        host: Address to bind; the default keeps the server on this machine. Use 0.0.0.0 to expose it.
        port: TCP port.
        api_key: If set, every /v1 request must send `Authorization: Bearer <api_key>`.
        model_name: The model id clients must ask for; defaults to the checkpoint directory's name.
        max_batch: Most sequences decoded together in one batch (a request with n choices takes n); the KV
            cache grows with the requests, so a large batch of short requests costs little memory.
        max_queue: Most requests waiting for a batch slot; beyond that the server answers 429 with a
            Retry-After header (seconds, from the queue length and the recent rate of finished requests).
        max_body_bytes: Largest accepted request body; larger ones get 413.
        device: Torch device to run on (cpu, cuda).
        quantize: "int4" stores the Transformer blocks' weights as 4-bit integers for several times faster
            decoding on a CPU (lossless for checkpoints imported from a Q4_1 GGUF); "none" keeps them as saved.
        threads: Torch threads for decoding; default all cores but one, which is left to the HTTP server.
        sampling: Defaults for the sampling fields a request omits (`--sampling.help` lists them).
        speculative: Speculative decoding, for lower latency when one sequence decodes: "lookup" drafts
            by copying from the prompt and output, "draft" with `--draft_model`; the output's distribution
            (and greedy text) stays that of plain decoding.
        draft_model: Checkpoint directory of a small model on the same tokenizer, for `--speculative draft`.
        draft_tokens: Most tokens drafted per step.
        max_prefill_tokens: Most prompt tokens (padding included) prefilled between two decode steps, so
            admitting a crowd of new requests, or a long prompt (read in chunks), delays the running
            streams' next token only that much.
    """
    import uvicorn

    if not Path(model).is_dir():
        raise TinyLMError(f"--model {model} is not a checkpoint directory")
    if max_batch < 1 or max_queue < 0 or max_prefill_tokens < 1:
        raise TinyLMError(
            f"need max_batch >= 1, max_queue >= 0 and max_prefill_tokens >= 1, "
            f"got {max_batch}, {max_queue} and {max_prefill_tokens}"
        )
    engine = Engine.load(model, device, max_batch, quantize)
    engine.speculator = make_speculator(
        speculative, draft_model, draft_tokens, engine.model, engine.tokenizer, quantize
    )
    if engine.quantization:
        print(f"tinylm: {engine.quantization}", file=sys.stderr)
    name = model_name or Path(model).resolve().name
    app = create_app(
        engine, name, api_key, max_batch, max_queue, max_body_bytes, threads, sampling, max_prefill_tokens
    )
    print(f"tinylm: serving {name!r} on http://{host}:{port} (chat page at /, API at /v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
