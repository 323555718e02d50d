"""The engine on a tiny random checkpoint: batching, KV-cache exactness, stops, streaming, CLI and chat."""

import io
import json
import re
from dataclasses import fields

import pytest
import torch

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.infer import Engine, SamplingParams
from tinylm.infer.chat import ChatSession
from tinylm.infer.engine import Batch, Prefill
from tinylm.infer.text import TextStream

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["To be", "or not to be, that is the question", "床前明月光", "q", "The quick brown fox jumps"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def engine(ckpt):
    return Engine.load(ckpt, max_batch_size=3)


def test_batched_greedy_equals_one_at_a_time(engine):
    # 5 prompts through 3 rows: rows finish at different steps, leave, and new prompts join mid-decode.
    params = [SamplingParams(temperature=0, max_new_tokens=n, ignore_eos=True) for n in (12, 5, 12, 8, 12)]
    batched = engine.generate(PROMPTS, params)
    for prompt, p, b in zip(PROMPTS, params, batched, strict=True):
        alone = engine.generate([prompt], p)[0]
        assert b.token_ids == alone.token_ids
        assert b.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert len(b.token_ids) == p.max_new_tokens and b.finish_reason == "length"


def test_cached_decoding_equals_a_full_forward_pass(engine):
    seq = engine.generate([PROMPTS[1]], GREEDY)[0]
    ids = torch.tensor([seq.prompt_ids + seq.token_ids])
    with torch.no_grad():
        logp = engine.model(ids).log_softmax(-1)[0]
    n = len(seq.prompt_ids)
    expected = [logp[n - 1 + i, t].item() for i, t in enumerate(seq.token_ids)]
    assert seq.logprobs == pytest.approx(expected, abs=1e-4)
    assert seq.token_ids == logp[n - 1 : -1].argmax(-1).tolist()


def test_seeded_sampling_is_reproducible_and_batch_independent(engine):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=3, max_new_tokens=16, ignore_eos=True)
    alone = engine.generate([PROMPTS[2]], params)[0]
    again = engine.generate(PROMPTS[2:], params)[0]  # batched with others; row 0 keeps seed 3
    assert alone.token_ids == again.token_ids
    group = engine.generate([PROMPTS[2]] * 3, params)  # one prompt repeated: rows get seeds 3, 4, 5
    assert len({tuple(s.token_ids) for s in group}) > 1


def test_repeated_prompts_are_prefilled_once(engine):
    # A GRPO group (or a request's n choices): one prefill row, its cache copied to every sequence.
    shapes = []
    handle = engine.model.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    try:
        group = engine.generate([PROMPTS[1]] * 3, GREEDY)
    finally:
        handle.remove()
    assert shapes[0] == (1, len(group[0].prompt_ids)) and all(s[1] == 1 for s in shapes[1:])
    alone = engine.generate([PROMPTS[1]], GREEDY)[0]
    assert all(s.token_ids == alone.token_ids for s in group[:3])


def test_a_prompt_read_in_chunks_decodes_as_in_one_pass(engine):
    # Left-padded prompts of different lengths, a repeated one among them, read 3 columns at a time.
    prompts = [PROMPTS[1], PROMPTS[4], PROMPTS[1], PROMPTS[3]]
    seqs = [engine.sequence(p, GREEDY) for p in prompts]
    prefill, batch = Prefill(engine.model, seqs), Batch(engine)
    passes = 0
    while not prefill.finished:
        prefill.feed(3)
        passes += 1
    assert passes == -(-max(len(s.prompt_ids) for s in seqs) // 3)
    batch.join(prefill)
    while batch.seqs:
        batch.step()
    for seq, alone in zip(seqs, engine.generate(prompts, GREEDY), strict=True):
        assert seq.token_ids == alone.token_ids
        assert seq.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_stop_token_and_stop_string(engine):
    full = engine.generate([PROMPTS[0]], GREEDY)[0]
    stop_tok = full.token_ids[5]
    first = full.token_ids.index(stop_tok)
    seq = engine.generate(
        [PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=16, stop_token_ids=[stop_tok])
    )[0]
    assert seq.finish_reason == "stop" and seq.token_ids == full.token_ids[: first + 1]
    assert seq.text == engine.decode(full.token_ids[:first])
    visible = full.text[3:6]
    cut = engine.generate([PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=16, stop=[visible]))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(visible)]


def test_context_limit_names_both_numbers(engine):
    with pytest.raises(TinyLMError, match=r"context is 256 tokens.*250 new tokens"):
        engine.sequence(PROMPTS[1], SamplingParams(max_new_tokens=250))


def test_stream_matches_generate(engine):
    seq = engine.sequence(PROMPTS[3], GREEDY)
    pieces = list(engine.stream(seq))
    assert "".join(pieces) == seq.text == engine.generate([PROMPTS[3]], GREEDY)[0].text


def test_text_stream_never_splits_a_character(engine):
    text = "床前明月光，疑是地上霜。"
    ids = engine.tokenizer.encode(text)
    assert len(ids) > len(text)  # characters really are split over byte tokens
    stream = TextStream(engine.decode)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p) > 3  # streamed in pieces, not all at the end


def test_text_stream_holds_back_a_possible_stop_string(engine):
    stream = TextStream(engine.decode, stop=["ab!"])
    out = [stream.push(engine.tokenizer.encode(c)[0]) for c in "xab"]
    assert out == ["x", "", ""]  # "ab" may become "ab!"
    assert stream.push(engine.tokenizer.encode("c")[0]) == "abc"
    assert [stream.push(engine.tokenizer.encode(c)[0]) for c in "ab!z"] == ["", "", "", ""]
    assert stream.stopped and stream.text == "xabc"


def test_generate_cli(ckpt, engine, tmp_path, capsys):
    sampling = ["--sampling.max_new_tokens", "8", "--sampling.seed", "3"]
    assert main(["generate", "--model", str(ckpt), "--prompt", "To be", *sampling]) == 0
    streamed = capsys.readouterr().out
    assert streamed == engine.generate(["To be"], SamplingParams(max_new_tokens=8, seed=3))[0].text + "\n"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "To be"}\n{"prompt": "床前"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        "--model",
        str(ckpt),
        "--prompts-file",
        str(prompts),
        "--sampling.max-new-tokens",
        "8",
    ]
    assert main([*args, "--sampling.seed", "3", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == ["To be", "床前"]
    assert records[0]["text"] + "\n" == streamed  # prompt 0 of a file draws with the seed itself
    assert main(["generate", "--model", str(ckpt)]) == 2
    assert "exactly one of --prompt or --prompts_file" in capsys.readouterr().err


def test_generate_and_chat_default_to_sampling_params(ckpt, engine, tmp_path, capsys):
    # Only the seed is given: every other option must be SamplingParams()'s (temperature 1, 128 tokens, ...).
    assert main(["generate", "--model", str(ckpt), "--prompt", "To be", "--sampling.seed", "4"]) == 0
    assert capsys.readouterr().out == engine.generate(["To be"], SamplingParams(seed=4))[0].text + "\n"
    transcript = tmp_path / "chat.md"
    chat = ["chat", "--model", str(ckpt), "--say", '["Hi"]', "--transcript", str(transcript)]
    assert main([*chat, "--sampling.seed", "4"]) == 0
    prompt = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    reply = engine.generate([prompt], SamplingParams(seed=4))[0].text
    assert transcript.read_bytes().decode() == f"**User:** Hi\n\n**Assistant:** {reply}\n"


def test_an_invalid_sampling_option_exits_2_with_one_line(ckpt, capsys):
    assert main(["generate", "--model", str(ckpt), "--prompt", "x", "--sampling.top_p", "2"]) == 2
    assert capsys.readouterr().err == "tinylm: error: top_p must be a number in (0, 1], got 2.0\n"


def test_chat_session_commands_and_history(engine):
    session = ChatSession(engine, SamplingParams(temperature=0, max_new_tokens=6))
    lines = iter(
        ["/system Be brief.", "hello", "/set temperature 0.5", "/set top_p 2", "/bogus", "again", "/quit"]
    )
    out = io.StringIO()
    session.run(lambda _: next(lines), out)
    text = out.getvalue()
    assert "system message set" in text and "(temperature = 0.5)" in text
    assert "error: top_p must be a number in (0, 1]" in text and "error: unknown command /bogus" in text
    assert [m["role"] for m in session.messages()] == ["system", "user", "assistant", "user", "assistant"]
    assert session.command("/reset") and session.messages() == [{"role": "system", "content": "Be brief."}]


def test_chat_set_and_show_cover_every_sampling_option(engine):
    session = ChatSession(engine, SamplingParams())
    assert session.command('/set stop ["User:", "\\n\\n"]') == "(stop = ['User:', '\\n\\n'])"
    assert session.command("/set stop_token_ids 7") == "(stop_token_ids = [7])"
    assert (
        session.command("/set seed 5") == "(seed = 5)"
        and session.command("/set seed none") == "(seed = None)"
    )
    assert session.command("/set ignore_eos true") == "(ignore_eos = True)"
    assert session.params == SamplingParams(stop=["User:", "\n\n"], stop_token_ids=[7], ignore_eos=True)
    shown = session.command("/show")
    assert re.findall(r"(\w+)=", shown) == [f.name for f in fields(SamplingParams)]
    for line, message in [
        ("/set top_logprobs many", "top_logprobs needs a value of type int, got 'many'"),
        ("/set ignore_eos maybe", "ignore_eos needs a value of type bool"),
        ('/set stop_token_ids ["a"]', "stop_token_ids needs a value of type list[int]"),
        ("/set top_logprobs 21", "top_logprobs must be an integer in [0, 20]"),
        ("/set warmth 1", "unknown option 'warmth'"),
    ]:
        with pytest.raises(TinyLMError, match=re.escape(message)):
            session.command(line)
    assert session.params.top_logprobs == 0  # a refused value changes nothing


def test_chat_forgets_old_turns_to_fit_the_context(engine):
    session = ChatSession(engine, SamplingParams(temperature=0, max_new_tokens=100))
    for _ in range(4):
        session.reply("To be, or not to be, that is the question. " * 2)
    prompt = engine.chat_prompt(session.messages()[:-1])
    assert len(engine.tokenizer.encode(prompt)) + 100 <= engine.context
    assert len(session.history) < 8


def test_scripted_chat_writes_a_transcript_of_every_turn(ckpt, tmp_path, capsys):
    out = tmp_path / "chat.md"
    args = ["chat", "--model", str(ckpt), "--system", "Be brief.", "--sampling.max_new_tokens", "5"]
    main([*args, "--sampling.temperature", "0", "--say", '["Hi", "床前明月光"]', "--transcript", str(out)])
    text = out.read_text(encoding="utf-8")
    assert text.startswith("**System:** Be brief.") and text.count("**User:**") == 2
    assert "> 床前明月光" in capsys.readouterr().out
    main(
        [
            *args,
            "--sampling.temperature",
            "0",
            "--say",
            '["Hi", "床前明月光"]',
            "--transcript",
            str(tmp_path / "again.md"),
        ]
    )
    assert (tmp_path / "again.md").read_text(encoding="utf-8") == text  # greedy: reproducible
