"""The CLI explains itself: `tinylm --help` lists every verb without importing a stage, every verb's
`--help` names its options, and a bad option value is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinylm.cli import main, normalize_argv
from tinylm.core import COMMANDS, GROUPS, load_command

# Modules `tinylm --help` may import: the command line, the registry it reads, and the base.
HELP_MODULES = ("tinylm.cli", "tinylm.core", "tinylm.errors")


def test_root_help_lists_every_verb(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for path, command in COMMANDS.items():
        assert path in out and command.summary.split()[0] in out


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"]])
def test_help_imports_no_stage(argv: list[str]) -> None:
    code = (
        "import sys\nfrom tinylm.cli import main\n"
        f"assert main({argv!r}) == 0\n"
        "print(*sorted(m for m in sys.modules if m.startswith(('tinylm', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.split("\n")[-2].split()
    assert "tinylm.core" in loaded
    assert [m for m in loaded if m != "tinylm" and not m.startswith(HELP_MODULES)] == []


def test_group_help_and_unknown_verbs(capsys) -> None:
    assert main(["data"]) == 2  # a group alone is not a command: its verbs are listed
    out = capsys.readouterr().out
    assert GROUPS["data"] in out and "data prepare" in out and "reward train" not in out
    assert main(["dat"]) == 2
    assert "did you mean `tinylm data`?" in capsys.readouterr().err
    assert main(["data", "mak"]) == 2
    assert "did you mean `tinylm data make`?" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_verb_has_help(path: str, capsys) -> None:
    assert main([*path.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: tinylm {path}" in out and "--config" in out


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_registry_summary_is_the_docstring(path: str) -> None:
    assert COMMANDS[path].summary == load_command(path).__doc__.strip().splitlines()[0]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--train.max-time", "5q"],
            "train.max_time must look like '110s', '5m', '1h' or a number of seconds, got '5q'",
        ),
        (["--train.lr", "-1"], "train.lr must be positive, got -1.0"),
        (["--model.n_head", "3", "--model.d_model", "64"], "model.n_head=3 does not divide model.d_model=64"),
        (["--train.lr", "abc"], "train.lr: expected float, got 'abc'"),
        (
            ["--train.schedule", "steep"],
            "train.schedule: expected one of 'cosine', 'wsd', 'constant', got 'steep'",
        ),
        (["--train.lrr", "1"], "train.lrr: no such option"),
        (["--context", "abc"], "context: expected int, got 'abc'"),
    ],
)
def test_a_bad_option_value_is_one_line(options: list[str], message: str, tmp_path, capsys) -> None:
    assert main(["pretrain", "--shards", str(tmp_path), "--out", str(tmp_path / "run"), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_python_m_tinylm_cli_reports_a_bad_value_in_one_line(tmp_path) -> None:
    argv = ["pretrain", "--shards", str(tmp_path), "--out", str(tmp_path / "run"), "--train.max-time", "5q"]
    done = subprocess.run([sys.executable, "-m", "tinylm.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "tinylm: error: train.max_time must look like '110s', '5m', '1h' or a number of seconds, got '5q'"
    ]


def test_option_names_accept_dashes_and_bare_recipes() -> None:
    assert normalize_argv(["tokenizer", "train", "--vocab-size", "5", "--model.n-layer=2"]) == [
        "tokenizer",
        "train",
        "--vocab_size",
        "5",
        "--model.n_layer=2",
    ]
    assert normalize_argv(["pipeline", "recipes/demo.yaml"]) == ["pipeline", "--config", "recipes/demo.yaml"]
    assert normalize_argv(["x", "--config", "a.yaml"]) == ["x", "--config", "a.yaml"]


def test_every_public_name_resolves() -> None:
    import tinylm

    for name in tinylm.__all__:
        assert getattr(tinylm, name) is not None, name
    with pytest.raises(AttributeError):
        tinylm.no_such_name  # noqa: B018
