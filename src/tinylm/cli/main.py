"""The `tinylm` command: find the verb, parse only its options, run its function.

The verb's words are read first; help for all verbs or one group comes from the registry
(`tinylm.core.commands`), and only the chosen verb's module is imported. Mistakes in the user's input
(`TinyLMError`, including any bad option value) print `tinylm: error: <message>` and exit 2.
"""

from __future__ import annotations

import difflib
import sys

from ..core.commands import COMMANDS, GROUPS
from ..core.options import parse_command
from ..errors import TinyLMError
from .help import group_help, root_help

HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tinylm` console script and of `python -m tinylm.cli` (what torchrun runs)."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except TinyLMError as e:
        print(f"tinylm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinylm: interrupted", file=sys.stderr)
        return 130


def run(argv: list[str]) -> int:
    """Run the command `argv` names; its exit status."""
    if not argv or argv[0] in HELP:
        print(root_help())
        return 0 if argv else 2
    path, rest = argv[0], argv[1:]
    if path in GROUPS:
        if not rest or rest[0] in HELP:
            print(group_help(path))
            return 0 if rest else 2
        path, rest = f"{path} {rest[0]}", rest[1:]
    if path not in COMMANDS:
        raise TinyLMError(_unknown(path))
    try:
        call = parse_command(path, normalize_argv(rest))
    except SystemExit as e:  # --help printed the command's options
        return 0 if e.code is None else int(e.code)
    call()
    return 0


def _unknown(path: str) -> str:
    group = path.split()[0]
    if group in GROUPS:
        known, listing = [p for p in COMMANDS if p.split()[0] == group], f"tinylm {group} --help"
    else:
        known, listing = [*COMMANDS, *GROUPS], "tinylm --help"
    close = difflib.get_close_matches(path, known, n=1)
    hint = f"did you mean `tinylm {close[0]}`? " if close else ""
    return f"unknown command `tinylm {path}`; {hint}`{listing}` lists them all"


def normalize_argv(argv: list[str]) -> list[str]:
    """Accept `--vocab-size` for `--vocab_size`, and a bare `recipe.yaml` for `--config recipe.yaml`."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        elif arg.endswith((".yaml", ".yml")) and not (out and out[-1].startswith("--")):
            out.append("--config")
        out.append(arg)
    return out
