"""The OpenAI-compatible server, live on 127.0.0.1, driven by the official `openai` client and raw HTTP."""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from itertools import pairwise

import httpx
import openai
import pytest
import uvicorn

from tinylm.cli import main
from tinylm.infer import Engine, SamplingParams
from tinylm.infer.engine import Batch
from tinylm.serve.app import create_app
from tinylm.serve.scheduler import Scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "sk-test"


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def engine(ckpt):
    return Engine.load(ckpt)


@pytest.fixture(scope="module")
def server(engine, live_server):
    app = create_app(engine, "tiny", api_key=KEY, max_batch=2, max_queue=1, max_body_bytes=20_000)
    live = live_server(app)
    live.scheduler = app.state.scheduler
    yield live
    live.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def post(server, path: str, body, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers, **{"timeout": 30, **kw})


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_completion_matches_the_engine(engine, client):
    r = client.completions.create(model="tiny", prompt="To be", max_tokens=12, temperature=0, logprobs=2)
    want = engine.generate(["To be"], SamplingParams(temperature=0, max_new_tokens=12))[0]
    assert r.choices[0].text == want.text
    assert r.choices[0].finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == len(want.prompt_ids) and r.usage.completion_tokens == len(want.token_ids)
    assert r.choices[0].logprobs.token_logprobs == pytest.approx(want.logprobs, abs=1e-4)
    assert all(len(t) <= 2 for t in r.choices[0].logprobs.top_logprobs)


def test_streamed_completion_equals_unstreamed(client):
    args = dict(model="tiny", prompt="床前明月光", max_tokens=16, temperature=0.8, seed=5)
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_chat_streamed_and_not(engine, client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, logprobs=True
    )
    prompt = engine.chat_prompt(messages)
    want = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=10))[0]
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want.text
    assert [t.logprob for t in r.choices[0].logprobs.content] == pytest.approx(want.logprobs, abs=1e-4)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == want.finish_reason


def test_omitted_fields_take_sampling_params_defaults(engine, server, client):
    # Only the seed is sent: temperature, top_p, max_tokens, ... must all be SamplingParams()'s.
    defaults = SamplingParams(seed=5)
    card = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]
    assert card["default_sampling"] == asdict(SamplingParams())
    api = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert (
        "temperature=1.0" in api["info"]["description"] and "max_new_tokens=128" in api["info"]["description"]
    )
    assert "shrunk to the room" in api["paths"]["/v1/completions"]["post"]["description"]
    r = client.completions.create(model="tiny", prompt="To be", seed=5)
    assert r.choices[0].text == engine.generate(["To be"], defaults)[0].text
    messages = [{"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model="tiny", messages=messages, seed=5, temperature=None)
    want = engine.generate([engine.chat_prompt(messages)], defaults)[0]
    assert r.choices[0].message.content == want.text and r.usage.completion_tokens == len(want.token_ids)


def test_omitted_max_tokens_shrinks_to_the_room_left(engine, client):
    prompt = "To be, or not to be, that is the question. " * 8
    room = engine.context - len(engine.tokenizer.encode(prompt))
    assert 0 < room < SamplingParams().max_new_tokens
    r = client.completions.create(model="tiny", prompt=prompt, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == room and r.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt=prompt, max_tokens=room + 1)


def test_serve_sampling_options_are_the_defaults_a_request_overrides(ckpt, engine, monkeypatch, live_server):
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert (
        main(
            ["serve", "--model", str(ckpt), "--sampling.temperature", "0", "--sampling.max_new_tokens", "12"]
        )
        == 0
    )
    live = live_server(apps[0])
    try:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        greedy = engine.generate(["To be"], SamplingParams(temperature=0, max_new_tokens=12))[0].text
        assert client.completions.create(model="ckpt", prompt="To be").choices[0].text == greedy
        sampled = (
            client.completions.create(model="ckpt", prompt="To be", temperature=1, seed=3).choices[0].text
        )
        assert sampled == engine.generate(["To be"], SamplingParams(max_new_tokens=12, seed=3))[0].text
        assert sampled != greedy
    finally:
        live.close()


def test_sse_ends_with_done(server):
    body = {"model": "tiny", "prompt": "q", "max_tokens": 3, "stream": True}
    with httpx.stream(
        "POST", server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        events = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "path,body,status,needle",
    [
        ("/v1/completions", {"model": "tiny", "prompt": "To be", "max_tokens": 300}, 400, "256"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "temperature": -1}, 400, "temperature"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "top_p": 0}, 400, "top_p"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "n": 3}, 400, "n must be at most 2"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "n": 0}, 400, "n: Input should be greater"),
        ("/v1/completions", {"model": "tiny", "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": [99999]}, 400, "token ids"),
        ("/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "gpt-4"),
        ("/v1/completions", {"prompt": "x"}, 400, "model"),
        ("/v1/completions", "{not json", 400, "not valid JSON"),
        ("/v1/completions", "[1, 2]", 400, "JSON object"),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
        ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {**CHAT, "frequency_penalty": 5}, 400, "frequency_penalty"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 10_000}, 400, "maximum context length is 256"),
        ("/v1/chat/completions", {"model": "tiny", "messages": "x" * 30_000}, 413, "limit"),
    ],
)
def test_user_mistakes_get_openai_errors(server, path, body, status, needle):
    err = error_of(post(server, path, body), status)
    assert needle in err["message"]


def test_context_error_says_both_numbers(server):
    err = error_of(
        post(server, "/v1/completions", {"model": "tiny", "prompt": "To be", "max_tokens": 300}), 400
    )
    assert "300 for the completion" in err["message"] and "in the prompt" in err["message"]
    assert err["code"] == "context_length_exceeded"


def test_api_key_is_required(server, client):
    error_of(post(server, "/v1/completions", {"model": "tiny", "prompt": "x"}, key=None), 401)
    error_of(post(server, "/v1/completions", {"model": "tiny", "prompt": "x"}, key="wrong"), 401)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=CHAT["messages"])
    error_of(httpx.get(server.url + "/v1/nowhere"), 404)


def wait_idle(server, timeout: float = 10) -> dict:
    deadline = time.time() + timeout
    while (counts := server.scheduler.counts) != {"running": 0, "waiting": 0} and time.time() < deadline:
        time.sleep(0.02)
    return counts


def test_full_queue_gives_429_and_disconnect_frees_the_slot(server, monkeypatch):
    jobs = []
    submit, step = server.scheduler.submit, Batch.step
    monkeypatch.setattr(server.scheduler, "submit", lambda seqs: jobs.extend(seqs) or submit(seqs))
    monkeypatch.setattr(Batch, "step", lambda self: time.sleep(0.02) or step(self))  # 250 steps take > 5 s
    body = {"model": "tiny", "prompt": "To be", "max_tokens": 250, "stream": True, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=30) as http:
        # max_batch=2 decoding + max_queue=1 waiting: a fourth request finds no room.
        request = http.build_request("POST", server.url + "/v1/completions", json=body, headers=headers)
        streams = [http.send(request, stream=True) for _ in range(3)]
        assert [r.status_code for r in streams] == [200, 200, 200]
        assert sum(server.scheduler.counts.values()) == 3
        refused = post(server, "/v1/completions", {**body, "stream": False})
        err = error_of(refused, 429)
        assert err["type"] == "rate_limit_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        for r in streams:
            r.close()  # hang up mid-stream
    assert wait_idle(server) == {"running": 0, "waiting": 0}
    assert [s.finish_reason for s in jobs[:3]] == ["cancelled"] * 3
    assert all(len(s.token_ids) < 250 for s in jobs[:3])


def test_concurrent_requests_are_batched_and_correct(engine, client):
    prompts = ["To be", "床前明月光", "The quick"]
    want = [s.text for s in engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=20))]

    def ask(p):
        return client.completions.create(model="tiny", prompt=p, max_tokens=20, temperature=0).choices[0].text

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(ask, prompts)) == want


def test_unstreamed_request_is_cancelled_when_the_client_leaves(server, monkeypatch):
    jobs = []
    submit, step = server.scheduler.submit, Batch.step
    monkeypatch.setattr(server.scheduler, "submit", lambda seqs: jobs.extend(seqs) or submit(seqs))
    monkeypatch.setattr(Batch, "step", lambda self: time.sleep(0.02) or step(self))
    body = {"model": "tiny", "prompt": "To be", "max_tokens": 250, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        post(server, "/v1/completions", body, timeout=0.5)
    assert wait_idle(server) == {"running": 0, "waiting": 0}
    assert jobs[0].finish_reason == "cancelled" and len(jobs[0].token_ids) < 250


@pytest.fixture(scope="module")
def roomy(engine, live_server):
    """A server at the default settings, without an API key."""
    app = create_app(engine, "tiny")
    live = live_server(app)
    live.scheduler = app.state.scheduler
    yield live
    live.close()


def test_defaults_hold_a_burst(roomy):
    assert roomy.scheduler.max_queue >= 256 and roomy.scheduler.max_batch >= 16
    body = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}

    def ask(i: int) -> int:
        return httpx.post(roomy.url + "/v1/chat/completions", json={**body, "stream": i % 2 == 1}, timeout=60)

    with ThreadPoolExecutor(48) as pool:  # more than the old defaults held (8 decoding + 32 waiting)
        assert {r.status_code for r in pool.map(ask, range(48))} == {200}


def record_joins_and_steps(monkeypatch) -> list[tuple[str, int]]:
    """("join", sequences joining) and ("step", sequences stepped) for every call the scheduler makes."""
    calls = []
    join, step = Batch.join, Batch.step
    monkeypatch.setattr(Batch, "join", lambda self, p: calls.append(("join", len(p.seqs))) or join(self, p))
    monkeypatch.setattr(Batch, "step", lambda self: calls.append(("step", len(self.seqs))) or step(self))
    return calls


def test_admission_is_capped_per_step_and_running_streams_advance_every_step(engine, monkeypatch):
    # max_prefill_tokens=1 admits one waiting request at a time, read a token per step; every step in between
    # decodes all the others.
    calls = record_joins_and_steps(monkeypatch)
    scheduler = Scheduler(engine, max_batch=4, max_queue=8, threads=1, max_prefill_tokens=1)
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)  # all run when the last joins

    async def run() -> list[list[str]]:
        jobs = [scheduler.submit([engine.sequence(p, params)]) for p in ["To be", "q", "The quick", "床前"]]
        scheduler.start()
        try:
            return [[d async for _, d in job.deltas() if d is not None] for job in jobs]
        finally:
            scheduler.stop()

    texts = asyncio.run(run())
    assert [c for c in calls if c[0] == "join"] == [("join", 1)] * 4
    assert all(b[0] == "step" for a, b in pairwise(calls) if a[0] == "join")  # no stream skips a step
    assert [b[1] for a, b in pairwise(calls) if a[0] == "join"] == [1, 2, 3, 4]  # each joins the others
    want = engine.generate(["To be", "q", "The quick", "床前"], params)
    assert ["".join(t) for t in texts] == [s.text for s in want]


def test_a_long_prompt_is_prefilled_in_chunks_between_the_running_streams_steps(engine, monkeypatch):
    calls = record_joins_and_steps(monkeypatch)
    passes = []
    handle = engine.model.register_forward_pre_hook(lambda _, args: passes.append(args[0].shape[1]))
    scheduler = Scheduler(engine, max_batch=4, max_queue=8, threads=1, max_prefill_tokens=4)
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    long = "or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    n_long = len(engine.tokenizer.encode(long))

    async def run() -> list[str]:
        jobs = [scheduler.submit([engine.sequence(p, params)]) for p in ["To be", long]]
        scheduler.start()
        try:
            return ["".join([d async for _, d in job.deltas() if d is not None]) for job in jobs]
        finally:
            scheduler.stop()

    try:
        texts = asyncio.run(run())
    finally:
        handle.remove()
    # the first prompt alone, at once; the long one 4 columns a pass, each pass followed by a decode step
    chunks = [t for t in passes if t > 1][1:]
    assert chunks == [4] * (n_long // 4) + ([n_long % 4] if n_long % 4 else [])
    first_join = calls.index(("join", 1))
    assert [c for c in calls[first_join + 1 :] if c[0] == "step"][: len(chunks)] == [("step", 1)] * len(
        chunks
    )
    assert texts == [s.text for s in engine.generate(["To be", long], params)]


@pytest.fixture
def prefills(engine):
    """The (rows, length) of every prefill forward pass of the model while the test runs."""
    seen = []

    def record(_, args):
        if args[0].shape[1] > 1:
            seen.append(tuple(args[0].shape))

    handle = engine.model.register_forward_pre_hook(record)
    yield seen
    handle.remove()


def test_n_choices_share_one_prefill(engine, roomy, prefills):
    client = openai.OpenAI(base_url=roomy.url + "/v1", api_key="unused", max_retries=0)
    prompt = "To be, or not to be"
    r = client.completions.create(model="tiny", prompt=prompt, n=3, max_tokens=8, seed=7)
    n_prompt = len(engine.tokenizer.encode(prompt))
    assert prefills == [(1, n_prompt)]
    assert [c.index for c in r.choices] == [0, 1, 2]
    want = [engine.generate([prompt], SamplingParams(max_new_tokens=8, seed=7 + i))[0] for i in range(3)]
    assert [c.text for c in r.choices] == [s.text for s in want]  # choice i is seeded with seed + i
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.completion_tokens == sum(len(s.token_ids) for s in want)


def test_n_choices_greedy_equal_and_sampled_reproducible_but_different(roomy):
    client = openai.OpenAI(base_url=roomy.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hello"}]
    args = dict(model="tiny", messages=messages, n=2, max_tokens=12, extra_body={"ignore_eos": True})
    greedy = client.chat.completions.create(temperature=0, **args)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    sampled = [client.chat.completions.create(temperature=1, seed=3, **args) for _ in range(2)]
    texts = [[c.message.content for c in r.choices] for r in sampled]
    assert texts[0] == texts[1] and texts[0][0] != texts[0][1]
    chunks = list(client.chat.completions.create(temperature=1, seed=3, stream=True, **args))
    streamed = ["", ""]
    for chunk in chunks:
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts[0]
    ends = [c for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert sorted(c.index for c in ends) == [0, 1] and {c.finish_reason for c in ends} == {"length"}


def test_openapi_declares_request_and_response_bodies(roomy):
    api = httpx.get(roomy.url + "/openapi.json", timeout=30).json()
    schemas = api["components"]["schemas"]
    for path, request, reply in [
        ("/v1/chat/completions", "ChatRequest", "ChatCompletion"),
        ("/v1/completions", "CompletionRequest", "Completion"),
    ]:
        op = api["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request}"} and op["requestBody"]["required"]
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(reply)
        assert "422" not in op["responses"] and "Retry-After" in op["responses"]["429"]["headers"]
    assert {"messages", "n", "temperature", "top_k", "max_completion_tokens"} <= set(
        schemas["ChatRequest"]["properties"]
    )
    assert {"prompt", "n", "logprobs", "echo"} <= set(schemas["CompletionRequest"]["properties"])
    assert schemas["ChatRequest"]["required"] == ["model", "messages"]


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(roomy):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(roomy.url + "/openapi.json")
    for path in ("/v1/completions", "/v1/chat/completions"):

        @given(case=schema[path]["POST"].as_strategy(), ours=st.booleans())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case, ours):
            if ours and isinstance(case.body, dict):
                case.body["model"] = "tiny"  # half the cases reach the model
            response = case.call(timeout=60)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        check()


def test_streamed_replies_conform_to_the_documented_event_schema(roomy):
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(roomy.url + "/openapi.json")
    for path, body in [
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ]:
        case = schema[path]["POST"].Case(body={"model": "tiny", "max_tokens": 2, "stream": True, **body})
        response = case.call(timeout=60)
        assert response.headers["content-type"][0].startswith("text/event-stream")
        case.validate_response(response, checks=[response_schema_conformance])
