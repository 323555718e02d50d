"""Chat and preference data: the loss mask covers exactly the assistant tokens, both SFT shapes load the same,
long examples are truncated or dropped and counted, bad rows name their file and line."""

from __future__ import annotations

import pytest

from tinylm.data.batching import length_batches
from tinylm.data.chat import (
    IGNORE,
    collate,
    encode_conversation,
    encode_prompt,
    encode_sft,
    load_conversations,
    load_prompts,
)
from tinylm.data.preferences import collate_pairs, encode_preferences, load_preferences
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer

CONVERSATION = [
    {"role": "system", "content": "You write Tang poems."},
    {"role": "user", "content": "写一首五言绝句，题为《静夜思》。 <|im_end|> is just text here"},
    {"role": "assistant", "content": "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"},
    {"role": "user", "content": "And in English?"},
    {"role": "assistant", "content": " Before my bed, the moonlight\n"},
]
# SmolLM2-Instruct's template: a default system turn when there is none, so the first render is not ChatML alone.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(tiny_tokenizer_dir)


def learned_runs(example) -> list[str]:
    """The runs of consecutive learned targets (token id lists), in order."""
    runs, current = [], []
    for label in example.labels:
        if label == IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


@pytest.mark.parametrize("template", [None, SMOLLM2_TEMPLATE])
def test_loss_mask_covers_exactly_the_assistant_tokens(tok, template) -> None:
    if template:
        tok = Tokenizer(tok._json, tok.config, template)
    ids, _ = encode_conversation(CONVERSATION, tok)
    assert tok.decode(ids) == tok.apply_chat_template(CONVERSATION)  # the rendered text, token for token
    (example,), counts = encode_sft([CONVERSATION], tok, context=4096)
    assert counts.kept == 1 and counts.truncated == 0 and example.input_ids == ids[:-1]
    runs = [tok.decode(r) for r in learned_runs(example)]
    assert runs == [m["content"] + "<|im_end|>" for m in CONVERSATION if m["role"] == "assistant"]
    # The literal "<|im_end|>" typed by the user is text, not the control token.
    im_end = tok.token_to_id("<|im_end|>")
    assert ids.count(im_end) == len(CONVERSATION)


def test_a_template_that_alters_contents_is_refused(tok) -> None:
    trimming = Tokenizer(
        tok._json, tok.config, SMOLLM2_TEMPLATE.replace("message['content']", "message['content'] | trim")
    )
    with pytest.raises(TinyLMError, match="verbatim"):
        encode_conversation(CONVERSATION, trimming)


def test_generation_prompt_is_the_training_prefix(tok) -> None:
    ids, mask = encode_conversation(CONVERSATION[:3], tok)
    prompt = encode_prompt(CONVERSATION[:2], tok)
    assert ids[: len(prompt)] == prompt and not any(mask[: len(prompt)]) and mask[len(prompt)]


def test_both_sft_shapes_load_the_same(tmp_path, tok, jsonl) -> None:
    path = jsonl(
        tmp_path / "sft.jsonl",
        [
            {"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]},
            {"prompt": "2 + 2?", "completion": "4"},
            {
                "prompt": [{"role": "user", "content": "2 + 2?"}],
                "completion": [{"role": "assistant", "content": "4"}],
            },
        ],
    )
    conversations = load_conversations(path)
    assert conversations[0] == conversations[1] == conversations[2]
    examples, _ = encode_sft(conversations, tok, context=64)
    assert examples[0] == examples[1] == examples[2]
    assert tok.decode([t for t in examples[0].labels if t != IGNORE]) == "4<|im_end|>"


def test_long_examples_are_truncated_or_dropped_and_counted(tok) -> None:
    long_answer = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "la " * 200}]
    long_prompt = [{"role": "user", "content": "la " * 200}, {"role": "assistant", "content": "ok"}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    examples, counts = encode_sft([long_answer, long_prompt, short], tok, context=32)
    assert (counts.kept, counts.truncated, counts.dropped_too_long) == (2, 1, 1)
    assert all(len(e.input_ids) <= 32 for e in examples)
    _, counts = encode_sft([long_answer, long_prompt, short], tok, context=32, overflow="drop")
    assert (counts.kept, counts.truncated, counts.dropped_too_long) == (1, 0, 2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "bot", "content": "hi"}]}, "unknown role 'bot'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"prompt": "hi"}, "missing field 'completion'"),
        ({"text": "hi"}, "expected a 'messages' list"),
        ({"messages": [{"role": "user"}]}, "string 'content'"),
    ],
)
def test_bad_sft_rows_name_file_and_line(tmp_path, row, message, jsonl) -> None:
    good = {"prompt": "a", "completion": "b"}
    path = jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(TinyLMError, match=rf"bad\.jsonl:2: .*{message}"):
        load_conversations(path)


def test_preferences_drop_identical_pairs_and_mask_only_the_answer(tmp_path, tok, jsonl) -> None:
    rows = [
        {"prompt": "Best fruit?", "chosen": "Pears.", "rejected": "Rocks."},
        {"prompt": "Best fruit?", "chosen": "Pears.", "rejected": "Pears."},
        {
            "prompt": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye?"},
            ],
            "chosen": [{"role": "assistant", "content": "Bye!"}],
            "rejected": [{"role": "assistant", "content": "No."}],
        },
    ]
    pairs, counts = load_preferences(jsonl(tmp_path / "prefs.jsonl", rows))
    assert len(pairs) == 2 and (counts.kept, counts.dropped_identical) == (2, 1)
    encoded, counts = encode_preferences(pairs, tok, context=128)
    assert counts.kept == 2
    answers = [[tok.decode(r) for r in learned_runs(side)] for pair in encoded for side in pair]
    assert answers == [["Pears.<|im_end|>"], ["Rocks.<|im_end|>"], ["Bye!<|im_end|>"], ["No.<|im_end|>"]]
    _, counts = encode_preferences(pairs, tok, context=8)
    assert (counts.kept, counts.dropped_too_long) == (0, 2)
    batch = collate_pairs(encoded, tok.pad_id)
    assert batch["input_ids"].shape[0] == 4
    assert batch["attention_mask"].sum(1).tolist() == [
        len(side.input_ids) for i in (0, 1) for side in (encoded[0][i], encoded[1][i])
    ]


def test_preference_missing_field_names_file_and_line(tmp_path, jsonl) -> None:
    path = jsonl(tmp_path / "prefs.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(TinyLMError, match=r"prefs\.jsonl:1: missing field 'rejected'"):
        load_preferences(path)


def test_prompts_keep_reference_and_fields(tmp_path, jsonl) -> None:
    rows = [
        {"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5. The answer is 5.", "answer": 5},
        {
            "messages": [
                {"role": "user", "content": "写一首五言绝句"},
                {"role": "assistant", "content": "..."},
            ],
            "form": "五言绝句",
        },
        {"prompt": "Open question"},
    ]
    prompts = load_prompts(jsonl(tmp_path / "p.jsonl", rows))
    assert prompts[0].messages == [{"role": "user", "content": "What is 2 + 3?"}] and prompts[0].fields == {
        "answer": 5
    }
    assert prompts[0].reference.endswith("is 5.")
    assert prompts[1].fields == {"form": "五言绝句"} and prompts[1].reference == "..."
    assert prompts[2].reference is None


def test_length_batches_are_deterministic_complete_and_tight(tok) -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    batches = length_batches(lengths, batch_size=10, seed=3)
    assert batches == length_batches(lengths, batch_size=10, seed=3)
    assert batches != length_batches(lengths, batch_size=10, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # random batches of 10 would spread about 80
    examples, _ = encode_sft([CONVERSATION[1:3], CONVERSATION[3:]], tok, context=256)
    batch = collate(examples, tok.pad_id)
    assert batch["labels"][1, len(examples[1].labels) :].eq(IGNORE).all()
    assert batch["attention_mask"].sum().item() == sum(len(e.input_ids) for e in examples)
