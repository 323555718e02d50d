"""A command's options, from its function's signature, turned into a checked call.

jsonargparse reads the signature and docstring, so `--help` always matches the code: dataclass parameters
become dotted options (`--model.n_layer 4`), `--config FILE.yaml` fills any of them from YAML, and a
dict (a recipe section) is checked exactly as the command line is. Every mistake in them, whether a bad
type, an unknown option or a `TinyLMError` raised by a config's own checks, becomes one `TinyLMError` line
naming the option and value; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
from argparse import ArgumentError
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, set_parsing_settings

from ..errors import TinyLMError
from .commands import COMMANDS, load, load_command

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # a dataclass field's docstring is its help


@dataclass(frozen=True)
class Call:
    """A command with its options parsed, typed and checked; calling it runs the command."""

    path: str
    kwargs: dict[str, Any]

    def __call__(self) -> Any:
        return load_command(self.path)(**self.kwargs)


def new_parser(prog: str, description: str = "") -> ArgumentParser:
    """An option parser that raises its errors (for `option_errors` to word) instead of exiting."""
    return ArgumentParser(prog=prog, description=description, exit_on_error=False)


def command_parser(path: str) -> ArgumentParser:
    """The parser of command `path` alone: `--config` plus its function's options."""
    command, fn = COMMANDS[path], load_command(path)
    parser = new_parser(f"tinylm {path}", (fn.__doc__ or "").split("\n\n")[0].strip())
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with values for any option.")
    if command.options:
        load(command.options)(parser)
    else:
        parser.add_function_arguments(fn, as_positional=command.positional)
    return parser


def parse_command(path: str, argv: list[str]) -> Call:
    """Command `path` with options from the command line (the words after the verb)."""
    parser = command_parser(path)
    with option_errors():
        return _bind(path, parser, parser.parse_args(argv))


def bind_command(path: str, options: dict[str, Any]) -> Call:
    """Command `path` with options from a dict, validated and typed exactly as on the command line."""
    parser = command_parser(path)
    with option_errors():
        return _bind(path, parser, parser.parse_object(options))


def call_command(path: str, options: dict[str, Any]) -> Any:
    """Run command `path` with options from a dict."""
    return bind_command(path, options)()


def _bind(path: str, parser: ArgumentParser, cfg: Namespace) -> Call:
    values = cfg.as_dict() if COMMANDS[path].options else vars(parser.instantiate(cfg))
    return Call(path, {k: v for k, v in values.items() if k not in ("config", "__path__")})


@contextlib.contextmanager
def option_errors(prefix: str = "") -> Iterator[None]:
    """Re-raise a mistake in options (see `option_error`) as one `TinyLMError` line, after `prefix`."""
    try:
        yield
    except TinyLMError:
        raise
    except Exception as e:
        message = option_error(e)
        if message is None:
            raise
        raise TinyLMError(prefix + message) from None


_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected a (.+?)\. Got value: (.*)")
_UNKNOWN = re.compile(r"Option '([^']+)' is not accepted")


def option_error(error: BaseException) -> str | None:
    """One line for a mistake in options, or None if `error` is not one.

    A `TinyLMError` anywhere in the cause chain (a config's `__post_init__` check, which jsonargparse
    wraps) is the message. A parse error gets the dotted option it names and the innermost reason.
    """
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    for e in chain:
        if isinstance(e, TinyLMError):
            return str(e)
    if not isinstance(error, ArgumentError):
        return None
    keys = [m.group(1) for e in chain if (m := _KEY.match(str(e)))]
    keys = list(dict.fromkeys(keys))  # each level of a nested option is reported twice
    reason = str(chain[-1]).splitlines()[0]
    if m := _UNKNOWN.fullmatch(reason):
        keys, reason = [*keys, m.group(1)], "no such option"
    elif m := _EXPECTED.fullmatch(reason):
        reason = f"expected {_type_name(m.group(1))}, got {m.group(2)!r}"
    return f"{'.'.join(keys)}: {reason}" if keys else reason


def _type_name(text: str) -> str:
    """`<class 'int'>` -> int, `typing.Literal['a', 'b']` -> one of 'a', 'b'."""
    if m := re.fullmatch(r"typing\.Literal\[(.*)\]", text):
        return f"one of {m.group(1)}"
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
