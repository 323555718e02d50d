"""`tinylm serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and a web chat page at `/`.

Handlers only translate: they validate the request (`protocol`), hand a `Sequence` to the `Scheduler`
(which batches all requests on one decode thread), and stream its text back as server-sent events or
collect it into one JSON response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import TinyLMError
from ..infer.engine import Engine, Sequence
from ..infer.sampling import SamplingParams
from ..infer.speculative import make_speculator
from .protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    envelope,
    new_id,
    parse,
    usage,
)
from .scheduler import Job, QueueFull, Scheduler

STATIC = Path(__file__).parent / "static"


def create_app(
    engine: Engine,
    model_name: str,
    api_key: str | None = None,
    max_batch: int = 8,
    max_queue: int = 32,
    max_body_bytes: int = 1_000_000,
    threads: int | None = None,
    sampling: SamplingParams | None = None,
) -> FastAPI:
    """The server application; its decode thread runs while the app's lifespan does.

    `sampling` holds the defaults for every sampling field a request omits (`SamplingParams()` if None).
    """
    defaults = sampling or SamplingParams()
    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue, threads=threads)

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

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

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

    async def read_json(request: Request) -> Any:
        authorize(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {max_body_bytes} bytes")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"request body is not valid JSON: {e}") from None

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
        """Queue the request's sequence; an omitted `max_tokens` is the default shrunk to fit the context."""
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
        try:
            seq = engine.sequence(ids, req.sampling(defaults, max_tokens, top_logprobs))
        except TinyLMError as e:
            raise APIError(400, str(e)) from None
        try:
            return scheduler.submit(seq)
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_exceeded", code="queue_full") from None

    async def finish(job: Job, request: Request) -> Sequence:
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
        return job.seq

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

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
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

    @app.post("/v1/completions")
    async def completions(request: Request):
        """OpenAI's legacy completions: continue `prompt` (text or token ids).

        Omitted sampling fields take the server's defaults (listed in the API description); an omitted
        max_tokens is the default max_new_tokens shrunk to the room the prompt leaves in the context,
        not OpenAI's 16.
        """
        req = parse(CompletionRequest, await read_json(request))
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

        def choice(seq: Sequence, text: str, start: int, end: int, reason: str | None) -> dict:
            lp = completion_logprobs(seq, tok, start, end) if req.logprobs is not None else None
            return {"index": 0, "text": text, "logprobs": lp, "finish_reason": reason}

        if not req.stream:
            seq = await finish(job, request)
            body = envelope(
                "text_completion",
                rid,
                model_name,
                [choice(seq, seq.text, 0, len(seq.token_ids), seq.finish_reason)],
                usage=usage(seq),
            )
            return JSONResponse(body)

        async def chunks() -> AsyncIterator[dict]:
            sent = 0
            async for delta in _with_end(job):
                seq, end = job.seq, len(job.seq.token_ids)  # the decode thread may append meanwhile
                reason = seq.finish_reason if delta is None else None
                yield envelope(
                    "text_completion", rid, model_name, [choice(seq, delta or "", sent, end, reason)]
                )
                sent = end
            if req.include_usage and not job.error:
                yield envelope("text_completion", rid, model_name, [], usage=usage(job.seq))

        return sse(job, chunks())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        """OpenAI's chat completions: the assistant's reply to `messages`, through the model's chat template.

        Omitted sampling fields take the server's defaults (listed in the API description); an omitted
        max_completion_tokens / max_tokens is the default max_new_tokens shrunk to the room the prompt
        leaves in the context.
        """
        req = parse(ChatRequest, await read_json(request))
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
            seq = await finish(job, request)
            message = {"role": "assistant", "content": seq.text}
            choice = {
                "index": 0,
                "message": message,
                "logprobs": logprobs(seq, 0, len(seq.token_ids)),
                "finish_reason": seq.finish_reason,
            }
            return JSONResponse(envelope("chat.completion", rid, model_name, [choice], usage=usage(seq)))

        async def chunks() -> AsyncIterator[dict]:
            first = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            yield envelope("chat.completion.chunk", rid, model_name, [first])
            sent = 0
            async for delta in _with_end(job):
                seq, end = job.seq, len(job.seq.token_ids)  # the decode thread may append meanwhile
                choice = {
                    "index": 0,
                    "delta": {"content": delta} if delta else {},
                    "logprobs": logprobs(seq, sent, end),
                    "finish_reason": seq.finish_reason if delta is None else None,
                }
                sent = end
                yield envelope("chat.completion.chunk", rid, model_name, [choice])
            if req.include_usage and not job.error:
                yield envelope("chat.completion.chunk", rid, model_name, [], usage=usage(job.seq))

        return sse(job, chunks())

    return app


async def _drain(job: Job) -> None:
    async for _ in job.deltas():
        pass


async def _with_end(job: Job) -> AsyncIterator[str | None]:
    """The job's text pieces, then one None once it has finished (the chunk that carries finish_reason)."""
    async for delta in job.deltas():
        yield delta
    if not job.error:
        yield None


def serve(
    model: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 32,
    max_body_bytes: int = 1_000_000,
    device: str = "cpu",
    quantize: Literal["none", "int4"] = "none",
    threads: int | None = None,
    sampling: SamplingParams | None = None,
    speculative: Literal["none", "lookup", "draft"] = "none",
    draft_model: Path | None = None,
    draft_tokens: int = 4,
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API, with a chat page at `/`.

    A request's sampling fields override the server's `--sampling` defaults one by one; an omitted
    max_tokens means `--sampling.max_new_tokens`, shrunk to the room the prompt leaves in the context.

    Args:
        model: Checkpoint directory (model weights, config and tokenizer files).
        host: Address to bind; the default keeps the server on this machine. Use 0.0.0.0 to expose it.
        port: TCP port.
        api_key: If set, every /v1 request must send `Authorization: Bearer <api_key>`.
        model_name: The model id clients must ask for; defaults to the checkpoint directory's name.
        max_batch: Most requests decoded together in one batch.
        max_queue: Most requests waiting for a batch slot; beyond that the server answers 429.
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
    """
    import uvicorn

    if not Path(model).is_dir():
        raise TinyLMError(f"--model {model} is not a checkpoint directory")
    if max_batch < 1 or max_queue < 0:
        raise TinyLMError(f"need max_batch >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
    engine = Engine.load(model, device, max_batch, quantize)
    engine.speculator = make_speculator(
        speculative, draft_model, draft_tokens, engine.model, engine.tokenizer, quantize
    )
    if engine.quantization:
        print(f"tinylm: {engine.quantization}", file=sys.stderr)
    name = model_name or Path(model).resolve().name
    app = create_app(engine, name, api_key, max_batch, max_queue, max_body_bytes, threads, sampling)
    print(f"tinylm: serving {name!r} on http://{host}:{port} (chat page at /, API at /v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
