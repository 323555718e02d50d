"""`tinylm chat`: a conversation with a model, typed in the terminal or scripted, with a Markdown transcript.

The conversation is rendered with the model's own chat template each turn and the reply is streamed as
it is decoded. Lines starting with "/" are commands (see `HELP`). When the history outgrows the context,
the oldest exchanges are dropped (the system message stays); the transcript keeps every turn.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO, get_args, get_origin, get_type_hints

from ..errors import TinyLMError
from ..io import atomic_file
from .engine import Engine
from .sampling import SamplingParams
from .speculative import make_speculator

HELP = """commands:
  /reset              forget the conversation (keeps the system message)
  /system TEXT        set the system message (empty TEXT removes it) and reset
  /set NAME VALUE     change a sampling option (/show lists them); lists as JSON, e.g. /set stop ["\\n"]
  /show               print the sampling options
  /help               this text
  /quit               leave (Ctrl-D works too)"""

TRANSCRIPT = "transcript.md"
"""File name of the transcript inside a pipeline's chat stage directory."""

SETTINGS: dict[str, Any] = get_type_hints(SamplingParams)
"""What `/set` can change, with each option's type: every field of SamplingParams."""


def parse_setting(name: str, text: str) -> Any:
    """The value typed after `/set NAME`: "none" clears an optional option, a list is JSON or one item."""
    hint = SETTINGS[name]
    optional = type(None) in get_args(hint)
    kind = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    try:
        if optional and text.lower() in ("none", "null"):
            return None
        if get_origin(kind) is list:
            items = json.loads(text) if text.startswith("[") else [text]
            return [get_args(kind)[0](item) for item in items]
        if kind is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind is not bool:
            return kind(text)
    except (ValueError, TypeError):
        pass
    expected = hint.__name__ if isinstance(hint, type) else str(hint)
    raise TinyLMError(f"{name} needs a value of type {expected}, got {text!r}")


class ChatSession:
    """A conversation: system message, alternating user / assistant turns, and sampling settings."""

    def __init__(self, engine: Engine, params: SamplingParams, system: str | None = None) -> None:
        self.engine, self.params, self.system = engine, params, system
        self.history: list[dict[str, str]] = []
        self.transcript = [f"**System:** {system}"] if system else []

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def reply(self, text: str, write: Callable[[str], object] = lambda s: None) -> str:
        """Add a user turn, stream the assistant's answer through `write`, and return it."""
        self.history.append({"role": "user", "content": text})
        while True:
            prompt = self.engine.chat_prompt(self.messages())
            n = len(self.engine.tokenizer.encode(prompt))
            if n + self.params.max_new_tokens <= self.engine.context or len(self.history) <= 1:
                break
            self.history = self.history[2:]  # forget the oldest exchange
        try:
            seq = self.engine.sequence(prompt, self.params)
        except TinyLMError:
            self.history.pop()
            raise
        for piece in self.engine.stream(seq):
            write(piece)
        self.history.append({"role": "assistant", "content": seq.text})
        self.transcript += [f"**User:** {text}", f"**Assistant:** {seq.text}"]
        return seq.text

    def command(self, line: str) -> str | None:
        """Run a /command; return the message to show, or None to quit."""
        name, _, arg = line[1:].strip().partition(" ")
        if name in ("quit", "exit"):
            return None
        if name == "reset":
            self.history = []
            return "(conversation reset)"
        if name == "system":
            self.system, self.history = arg.strip() or None, []
            self.transcript.append(f"**System:** {self.system or '(none)'}")
            return f"(system message {'set' if self.system else 'removed'}; conversation reset)"
        if name == "show":
            return ", ".join(f"{k}={getattr(self.params, k)!r}" for k in SETTINGS)
        if name == "set":
            key, _, value = arg.strip().partition(" ")
            if key not in SETTINGS:
                raise TinyLMError(f"unknown option {key!r}; one of: {', '.join(SETTINGS)}")
            self.params = dataclasses.replace(self.params, **{key: parse_setting(key, value.strip())})
            return f"({key} = {getattr(self.params, key)!r})"
        if name == "help":
            return HELP
        raise TinyLMError(f"unknown command /{name}; /help lists them")

    def run(self, read: Callable[[str], str], out: TextIO) -> None:
        """The read-reply loop; `read` is `input` in a terminal and a fake in tests."""
        out.write("tinylm chat: type a message, /help for commands, /quit to leave\n")
        while True:
            try:
                line = read("> ")
            except EOFError:
                out.write("\n")
                return
            if not line.strip():
                continue
            try:
                if line.startswith("/"):
                    message = self.command(line)
                    if message is None:
                        return
                    out.write(message + "\n")
                    continue
                self.reply(line, lambda s: (out.write(s), out.flush()))
                out.write("\n")
            except TinyLMError as e:
                out.write(f"error: {e}\n")


def chat(
    model: Path,
    system: str | None = None,
    say: list[str] | None = None,
    transcript: Path | None = None,
    sampling: SamplingParams | None = None,
    device: str = "cpu",
    quantize: Literal["none", "int4"] = "none",
    speculative: Literal["none", "lookup", "draft"] = "none",
    draft_model: Path | None = None,
    draft_tokens: int = 4,
) -> None:
    """Chat with a model in the terminal, replies streamed as they are generated.

    Args:
        model: Checkpoint directory (model weights, config and tokenizer files with a chat template).
        system: System message that opens the conversation.
        say: User turns to send one after another instead of reading the terminal (a scripted chat).
        transcript: Write the whole conversation to this Markdown file at the end.
        sampling: How replies are decoded (`--sampling.help` lists the options; `/set` changes them).
        device: Torch device (cpu, cuda).
        quantize: "int4" stores the Transformer blocks' weights as 4-bit integers for several times faster
            decoding on a CPU (lossless for checkpoints imported from a Q4_1 GGUF); "none" keeps them as saved.
        speculative: Speculative decoding, for lower latency when one sequence decodes: "lookup" drafts
            by copying from the prompt and output, "draft" with `--draft_model`; the output's distribution
            (and greedy text) stays that of plain decoding.
        draft_model: Checkpoint directory of a small model on the same tokenizer, for `--speculative draft`.
        draft_tokens: Most tokens drafted per step.
    """
    engine = Engine.load(model, device, quantize=quantize)
    engine.speculator = make_speculator(
        speculative, draft_model, draft_tokens, engine.model, engine.tokenizer, quantize
    )
    if engine.quantization:
        print(f"tinylm: {engine.quantization}", file=sys.stderr)
    session = ChatSession(engine, sampling or SamplingParams(), system)
    if say is None:
        session.run(input, sys.stdout)
    for text in say or []:
        print(f"> {text}")
        session.reply(text, lambda piece: print(piece, end="", flush=True))
        print()
    if transcript is not None:
        with atomic_file(transcript) as f:
            f.write("\n\n".join(session.transcript) + "\n")


def summarize(out: Path) -> str:
    """The transcript a pipeline's chat stage wrote into `out`, for report.md."""
    return (Path(out) / TRANSCRIPT).read_text(encoding="utf-8")
