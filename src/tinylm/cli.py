"""The `tinylm` command: one subcommand per stage, each a thin layer over a plain Python function.

Every command is a typed function registered in `COMMANDS`; jsonargparse builds its options from the
signature and docstring, so `--help` always matches the code. Dataclass parameters become dotted options
(`--model.n_layer 4`), `--config FILE.yaml` (or a bare `FILE.yaml`) fills any of them from YAML, and
option names accept dashes or underscores (`--vocab-size` = `--vocab_size`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from .errors import TinyLMError

# "verb [subverb]" -> "module:function". Kept as strings so each stage's module owns its function.
COMMANDS: dict[str, str] = {
    "pipeline": "tinylm.pipeline:run_pipeline",
    "tokenizer train": "tinylm.data.bpe:train_tokenizer",
    "data list": "tinylm.data.corpora:print_corpora",
    "data prepare": "tinylm.data.shards:prepare_shards",
    "data make": "tinylm.tasks.make:make_task",
    "data judge": "tinylm.eval.judge:judge_pairs",
    "import hf": "tinylm.interop.hf:import_hf",
    "import gguf": "tinylm.interop.gguf:import_gguf",
    "export hf": "tinylm.interop.hf:export_hf",
    "info": "tinylm.models.info:model_info",
    "generate": "tinylm.infer.generate:generate",
    "chat": "tinylm.infer.chat:chat",
    "serve": "tinylm.serve.app:serve",
    "pretrain": "tinylm.train.stages.pretrain:pretrain",
    "sft": "tinylm.train.stages.sft:sft",
    "eval bpb": "tinylm.eval.bpb:eval_bpb",
    "eval run": "tinylm.eval.run:eval_run",
    "reward train": "tinylm.train.stages.reward:reward_train",
    "reward score": "tinylm.eval.reward_model:reward_score",
    "dpo": "tinylm.train.stages.dpo:dpo",
    "ppo": "tinylm.train.stages.ppo:ppo",
    "grpo": "tinylm.train.stages.grpo:grpo",
}

GROUP_HELP: dict[str, str] = {
    "tokenizer": "Train byte-level BPE tokenizers.",
    "data": "Embedded corpora, token shards and task data.",
    "import": "Import models from Hugging Face directories and GGUF files.",
    "export": "Export tinylm checkpoints to Hugging Face directories.",
    "eval": "Score models: bits per byte, tasks.",
    "reward": "Reward models: train on preference pairs, score conversations.",
}


def load_command(path: str) -> Callable:
    """The function behind command `path` ("data prepare"), imported on first use."""
    module, name = COMMANDS[path].split(":")
    return getattr(importlib.import_module(module), name)


def _summary(fn: Callable) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


# Commands whose required arguments are positional (`tinylm import gguf FILE`); all others take --options.
POSITIONAL: set[str] = {"import hf", "import gguf", "export hf", "info", "data make", "eval run"}


def _command_parser(path: str, fn: Callable):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(description=(fn.__doc__ or "").split("\n\n")[0].strip())
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with values for any option.")
    if path == "pipeline":
        from .pipeline import add_arguments

        add_arguments(parser)
        parser.add_argument("--overwrite", type=bool, default=False, help="Start a different run afresh.")
    else:
        parser.add_function_arguments(fn, as_positional=path in POSITIONAL)
    return parser


def build_parser():
    """The full argument parser, with one subcommand (or group of subcommands) per stage."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    root = ArgumentParser(
        prog="tinylm", description="tinylm: build, align, serve and study a language model end to end."
    )
    verbs = root.add_subcommands(dest="command")
    grouped: dict[str, list[str]] = {}
    for path in COMMANDS:
        words = path.split()
        if len(words) == 1:
            fn = load_command(path)
            verbs.add_subcommand(path, _command_parser(path, fn), help=_summary(fn))
        else:
            grouped.setdefault(words[0], []).append(words[1])
    # jsonargparse wants each level of subcommands attached before the next level is added.
    for group, members in grouped.items():
        gparser = ArgumentParser(description=GROUP_HELP.get(group, ""))
        verbs.add_subcommand(group, gparser, help=GROUP_HELP.get(group, ""))
        actions = gparser.add_subcommands(dest="action")
        for verb in members:
            fn = load_command(f"{group} {verb}")
            actions.add_subcommand(verb, _command_parser(f"{group} {verb}", fn), help=_summary(fn))
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


def _selected(cfg) -> tuple[str, object]:
    """The chosen command's path ("data prepare") and its parsed arguments."""
    words = [cfg.command]
    sub = cfg[cfg.command]
    if "action" in sub and sub.action is not None:
        words.append(sub.action)
        sub = sub[sub.action]
    return " ".join(words), sub


def call_command(path: str, args: dict) -> object:
    """Run command `path` with options from a dict, validated and typed exactly as on the command line."""
    fn = load_command(path)
    parser = _command_parser(path, fn)
    parser.exit_on_error = False
    try:
        cfg = parser.instantiate(parser.parse_object(args))
    except Exception as e:  # jsonargparse reports unknown options and bad types this way
        raise TinyLMError(f"invalid options for `tinylm {path}`: {e}") from None
    return fn(**{k: v for k, v in vars(cfg).items() if k not in ("config", "__path__")})


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
        path, args = _selected(init)
        fn = load_command(path)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("config", "__path__")}
        if path == "pipeline":
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
