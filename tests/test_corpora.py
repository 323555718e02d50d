"""Embedded corpora: the registry matches the files, the package stays small, `tinylm data list` works."""

from __future__ import annotations

import lzma

import pytest

from tinylm.cli import main
from tinylm.data import CORPORA, read_documents
from tinylm.data.corpora import CORPORA_DIR


@pytest.mark.parametrize("name", list(CORPORA))
def test_registry_matches_the_file(name):
    corpus = CORPORA[name]
    with lzma.open(corpus.path) as f:
        assert len(f.read()) == corpus.text_bytes
    assert sum(1 for _ in read_documents(name)) == corpus.documents


def test_every_file_is_registered_licensed_and_small():
    files = sorted(p.name for p in CORPORA_DIR.glob("*.xz"))
    assert files == sorted(c.file for c in CORPORA.values())
    licences = (CORPORA_DIR / "LICENSES.md").read_text(encoding="utf-8")
    assert all(f in licences for f in files) and "Copyright (c) 2016 JackeyGao" in licences
    assert sum((CORPORA_DIR / f).stat().st_size for f in files) < 10e6


def test_cli_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for corpus in CORPORA.values():
        assert corpus.name in out and corpus.licence in out and f"{corpus.documents:,}" in out
    assert "57,603" in out and "LICENSES.md" in out
