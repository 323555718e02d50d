"""The CLI explains itself: `tinylm --help` and every verb's `--help` work and name their options."""

from __future__ import annotations

import pytest

from tinylm.cli import COMMANDS, main, normalize_argv


def test_root_help_lists_every_verb(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for path in COMMANDS:
        assert path.split()[0] in out


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_verb_has_help(path: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*path.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--config" in out


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
