"""Readers: sources, cleaning, JSONL fields and templates, and every bad-input case through the CLI."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from tinylm.cli import main
from tinylm.data import CORPORA, read_documents, resolve_source
from tinylm.errors import TinyLMError


def test_resolve_source_kinds(tmp_path, monkeypatch):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "notes.csv").write_text("x")  # not a corpus file
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.txt").write_text("c")
    assert resolve_source(tmp_path) == [tmp_path / "b.txt", tmp_path / "sub" / "a.jsonl"]
    assert resolve_source(str(tmp_path / "**" / "*.jsonl")) == [tmp_path / "sub" / "a.jsonl"]
    assert resolve_source(str(tmp_path / "b.txt")) == [tmp_path / "b.txt"]
    assert resolve_source("tang") == [CORPORA["tang"].path]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tang").mkdir()
    (tmp_path / "tang" / "mine.txt").write_text("mine")
    assert resolve_source("tang") == [Path("tang/mine.txt")]  # an existing path wins over a name


def test_resolve_source_errors(tmp_path):
    with pytest.raises(TinyLMError, match="nope.txt: no such file"):
        resolve_source(str(tmp_path / "nope.txt"))
    with pytest.raises(TinyLMError, match="matches no corpus files"):
        resolve_source(str(tmp_path / "*.jsonl"))
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(TinyLMError, match="unsupported file type"):
        resolve_source(str(tmp_path / "data.csv"))
    with pytest.raises(TinyLMError, match="holds no corpus files"):
        resolve_source(tmp_path)


def test_text_file_is_one_cleaned_document(tmp_path):
    raw = "\ufeffcafe\u0301\r\nline\ttwo\x00\x1b\x7f\rend\n\n\n\n\nsame document"
    (tmp_path / "a.txt").write_bytes(raw.encode("utf-8"))
    assert list(read_documents(str(tmp_path / "a.txt"))) == ["café\nline\ttwo\nend\n\n\n\n\nsame document"]


def test_compressed_files_are_read(tmp_path):
    with lzma.open(tmp_path / "a.txt.xz", "wt", encoding="utf-8") as f:
        f.write("squeezed")
    assert list(read_documents(str(tmp_path / "a.txt.xz"))) == ["squeezed"]


def test_jsonl_field_template_and_lists(tmp_path, jsonl):
    path = jsonl(
        tmp_path / "p.jsonl",
        [
            {"title": "静夜思", "paragraphs": ["床前明月光，", "疑是地上霜。"], "n": 1},
            {"title": "空", "paragraphs": []},
        ],
    )
    with open(path, "a") as f:
        f.write("\n   \n")  # blank lines are not documents
    assert list(read_documents(str(path), field="title")) == ["静夜思", "空"]
    # A backslash-n typed on a command line means a newline; an empty list renders to nothing.
    docs = list(read_documents(str(path), template="{title}\\n{paragraphs}"))
    assert docs == ["静夜思\n床前明月光，\n疑是地上霜。", "空\n"]
    with pytest.raises(TinyLMError, match="expected '}' before end of string"):
        list(read_documents(str(path), template="{title"))
    with pytest.raises(TinyLMError, match="must name its fields"):
        list(read_documents(str(path), template="no fields"))
    with pytest.raises(TinyLMError, match="either a field or a template"):
        list(read_documents(str(path), field="title", template="{title}"))


def test_embedded_corpora_have_default_templates():
    first = next(read_documents("tang300"))
    assert first == "行宫\n寥落古行宫，宫花寂寞红。\n白头宫女在，闲坐说玄宗。"
    assert next(read_documents("kjv")) == "In the beginning God created the heaven and the earth."


def test_invalid_utf8_is_replaced_counted_and_warned(tmp_path, capsys):
    (tmp_path / "a.txt").write_bytes(b"ok \xff\xfe bad \xe4 \xef\xbf\xbd real")
    assert list(read_documents(str(tmp_path / "a.txt"))) == ["ok \ufffd\ufffd bad \ufffd \ufffd real"]
    assert "3 invalid UTF-8 byte sequence(s) replaced" in capsys.readouterr().err
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    assert list(read_documents(str(path))) == ["fine", "caf\ufffd"]
    assert f"{path}: 1 invalid UTF-8" in capsys.readouterr().err


def test_bad_json_line_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n{"text": oops}\n["a list"]\n{"text": "four"}\n')
    with pytest.raises(TinyLMError, match=rf"{path}:2: not a JSON object"):
        list(read_documents(str(path)))
    assert list(read_documents(str(path), skip_bad_lines=True)) == ["one", "four"]
    assert "skipped 2 line(s) that are not JSON objects (first at line 2)" in capsys.readouterr().err


def test_missing_field_names_field_file_and_line(tmp_path, jsonl):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"body": "y"}])
    with pytest.raises(TinyLMError, match=rf"{path}:2: missing field 'text'; the record has fields body"):
        list(read_documents(str(path)))


def test_empty_corpus(tmp_path):
    (tmp_path / "a.txt").write_text(" \n\t\n")
    (tmp_path / "b.jsonl").write_text('{"text": "   "}\n\n')
    with pytest.raises(TinyLMError, match="empty corpus"):
        list(read_documents(str(tmp_path)))


# Every bad input through the real CLI, for both commands that read corpora: exit code 2, one message on
# stderr, no traceback, and no output (not even a temporary directory) left behind.


@pytest.fixture(params=["tokenizer train", "data prepare"])
def cli(request, tmp_path, capsys, tiny_tokenizer_dir):
    """Run one corpus-reading command on `data`; return (exit code, stderr, whether output was written)."""

    def run(data, *extra):
        out = tmp_path / "out"
        if request.param == "tokenizer train":
            args = ["tokenizer", "train", "--vocab-size", "300"]
        else:
            args = ["data", "prepare", "--tokenizer", str(tiny_tokenizer_dir), "--workers", "1"]
        code = main([*args, "--data", str(data), "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers
        return code, err, out.exists()

    return run


def test_cli_missing_path(cli, tmp_path):
    code, err, written = cli(tmp_path / "missing.jsonl")
    assert (code, written) == (2, False)
    assert (
        err
        == f"tinylm: error: {tmp_path / 'missing.jsonl'}: no such file or directory, and not an embedded corpus (shakespeare, tang, tang300, kjv)\n"
    )


def test_cli_empty_corpus(cli, tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    code, err, written = cli(tmp_path / "empty.txt")
    assert (code, written) == (2, False)
    assert err.startswith("tinylm: error:") and "empty corpus" in err


def test_cli_bad_json_line_then_skip(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b c"}\n' * 20 + "{not json\n")
    code, err, written = cli(bad)
    assert (code, written) == (2, False)
    assert f"tinylm: error: {bad}:21: not a JSON object" in err
    code, err, written = cli(bad, "--skip-bad-lines", "true")
    assert (code, written) == (0, True)
    assert f"tinylm: warning: {bad}: skipped 1 line(s) that are not JSON objects (first at line 21)" in err


def test_cli_missing_field(cli, tmp_path, jsonl):
    path = jsonl(tmp_path / "nofield.jsonl", [{"body": "b"}])
    code, err, written = cli(path, "--field", "text")
    assert (code, written) == (2, False)
    assert f"{path}:1: missing field 'text'; the record has fields body" in err


def test_cli_invalid_utf8_is_a_warning(cli, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("naïve café, ".encode("latin-1") * 50)
    code, err, written = cli(path)
    assert (code, written) == (0, True)
    assert f"tinylm: warning: {path}: 100 invalid UTF-8 byte sequence(s) replaced by U+FFFD" in err
