"""The `tinylm` command: one subcommand per stage, each a thin layer over a plain Python function.

Every command is a typed function registered in `COMMANDS`; jsonargparse builds its options from the
signature and docstring, so `--help` always matches the code. Dataclass parameters become dotted options
(`--model.n_layer 4`), `--config FILE.yaml` (or a bare `FILE.yaml`) fills any of them from YAML, and
option names accept dashes or underscores (`--vocab-size` = `--vocab_size`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from .errors import TinyLMError

# "verb [subverb]" -> "module:function". Kept as strings so each stage's module owns its function.
COMMANDS: dict[str, str] = {
    "pipeline": "tinylm.pipeline:run_pipeline",
    "tokenizer train": "tinylm.tokenizer:train_tokenizer",
    "data list": "tinylm.data.corpora:print_corpora",
    "data prepare": "tinylm.data.shards:prepare_shards",
}

GROUP_HELP: dict[str, str] = {
    "tokenizer": "Train byte-level BPE tokenizers.",
    "data": "Embedded corpora, token shards and task data.",
}


def _load(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _summary(fn: Callable) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


def build_parser():
    """The full argument parser, with one subcommand (or group of subcommands) per stage."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    root = ArgumentParser(
        prog="tinylm",
        description="tinylm: build, align, serve and study a language model end to end.",
        env_prefix="TINYLM",
        default_env=False,
    )
    verbs = root.add_subcommands(dest="command")
    groups: dict[str, object] = {}
    for path, target in COMMANDS.items():
        fn = _load(target)
        parser = ArgumentParser(description=(fn.__doc__ or "").split("\n\n")[0].strip())
        parser.add_argument("--config", action=ActionConfigFile, help="YAML file with values for any option.")
        if path == "pipeline":
            from .pipeline import add_arguments

            add_arguments(parser)
            parser.add_argument("--overwrite", type=bool, default=False, help="Start a different run afresh.")
        else:
            parser.add_function_arguments(fn, as_positional=True)
        words = path.split()
        if len(words) == 1:
            verbs.add_subcommand(words[0], parser, help=_summary(fn))
            continue
        group, verb = words
        if group not in groups:
            gparser = ArgumentParser(description=GROUP_HELP.get(group, ""))
            groups[group] = gparser.add_subcommands(dest="action")
            verbs.add_subcommand(group, gparser, help=GROUP_HELP.get(group, ""))
        groups[group].add_subcommand(verb, parser, help=_summary(fn))
    return root


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


def _call(cfg) -> object:
    words = [cfg.command]
    sub = cfg[cfg.command]
    if "action" in sub and sub.action is not None:
        words.append(sub.action)
        sub = sub[sub.action]
    fn = _load(COMMANDS[" ".join(words)])
    return fn, sub


def _namespace_to_dict(obj):
    from jsonargparse import Namespace

    if isinstance(obj, Namespace):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {k: _namespace_to_dict(v) for k, v in obj.items()}
    return obj


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tinylm` console script."""
    argv = normalize_argv(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        cfg = parser.parse_args(argv)
        init = parser.instantiate(cfg)
        fn, args = _call(init)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("config", "__path__")}
        if fn.__name__ == "run_pipeline":
            overwrite = kwargs.pop("overwrite")
            kwargs = {"recipe": _namespace_to_dict(kwargs), "overwrite": overwrite}
        fn(**kwargs)
    except TinyLMError as e:
        print(f"tinylm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinylm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
