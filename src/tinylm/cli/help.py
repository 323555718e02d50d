"""`tinylm --help` and `tinylm GROUP --help`, printed from the command registry without importing a stage."""

from __future__ import annotations

import textwrap

from ..core.commands import COMMANDS, GROUPS

DESCRIPTION = "tinylm: build, align, serve and study a language model end to end."
OPTIONS = (
    "Each command has its own --help. Options can come from YAML (--config FILE.yaml, or a bare FILE.yaml) "
    "and be overridden on the command line; names take dashes or underscores; a config's fields are "
    "dotted (--train.lr 3e-3)."
)


def root_help() -> str:
    return _help("tinylm COMMAND [options]", DESCRIPTION, list(COMMANDS))


def group_help(group: str) -> str:
    members = [path for path in COMMANDS if path.split()[0] == group]
    return _help(f"tinylm {group} COMMAND [options]", GROUPS[group], members)


def _help(usage: str, description: str, paths: list[str]) -> str:
    width = max(len(p) for p in paths) + 4
    lines = [f"usage: {usage}", "", description, "", "commands:"]
    for path in paths:
        summary = textwrap.wrap(COMMANDS[path].summary, 100 - width, break_on_hyphens=False)
        lines.append(f"  {path:<{width - 2}}{summary[0]}")
        lines += [" " * width + line for line in summary[1:]]
    return "\n".join([*lines, "", textwrap.fill(OPTIONS, 100)])
