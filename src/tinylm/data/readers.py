"""Read a corpus into clean documents, from a file, a glob, a directory or an embedded corpus name.

A document is the unit that is followed by an EOS token in the token shards:

- a plain-text file (`.txt`, `.md`) is one document. Plain text has no reliable document separator
  (Shakespeare's plays are parted by the same blank lines that part their scenes), so a corpus that needs
  boundaries comes as one file per document, or as JSONL.
- a JSONL line is one document, rendered from one field (`field="text"`) or from a template such as
  `"{title}\\n{paragraphs}"`, where a list field is joined with newlines. Blank lines are ignored.
- a Parquet row (`.parquet`) is one document, rendered like a JSONL record; reading Parquet needs pyarrow.

Every document is cleaned the same way, so training and evaluation see the same text: invalid UTF-8 is
replaced by U+FFFD (counted, with a warning), line ends become `\\n`, control characters other than `\\n`
and `\\t` are removed, and the text is put in Unicode NFC. Files ending in `.xz` or `.gz` are decompressed
on the fly, which is how the embedded corpora are read.
"""

from __future__ import annotations

import dataclasses
import glob
import re
import string
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import TinyLMError
from .corpora import CORPORA, corpus_for_path
from .jsonl import COMPRESSED, decode, jsonl_rows, open_binary, warn_invalid

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
PARQUET_SUFFIXES = (".parquet",)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # lone surrogates from JSON "\ud800" escapes cannot be encoded


def file_kind(path: Path) -> str | None:
    """ "text", "jsonl", "parquet" or None (not a corpus file), judged by the suffix under any .xz / .gz."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    name = path.name[: -len(path.suffix)] if path.suffix in COMPRESSED else path.name
    suffix = Path(name).suffix.lower()
    return "text" if suffix in TEXT_SUFFIXES else "jsonl" if suffix in JSONL_SUFFIXES else None


def _is_corpus_file(path: Path) -> bool:
    return path.is_file() and file_kind(path) is not None


def resolve_source(name_or_path: str | Path) -> list[Path]:
    """The corpus files behind a name: an existing file or directory, a glob, or an embedded corpus.

    An existing path wins over an embedded name of the same spelling. Directories are searched
    recursively (hidden entries skipped); directory and glob matches are sorted, so the order is stable.
    """
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    expected = "a .txt, .md or .jsonl file (optionally .xz or .gz) or a .parquet file"
    if path.is_file():
        if file_kind(path) is None:
            raise TinyLMError(f"{path}: unsupported file type; expected {expected}")
        return [path]
    if path.is_dir():
        files = sorted(
            f
            for f in path.rglob("*")
            if _is_corpus_file(f) and not any(p.startswith(".") for p in f.relative_to(path).parts)
        )
        if not files:
            raise TinyLMError(f"directory {path} holds no corpus files; expected {expected}")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if _is_corpus_file(Path(f)))
        if not files:
            raise TinyLMError(f"{spec} matches no corpus files; expected {expected}")
        return files
    if spec in CORPORA:
        return [CORPORA[spec].path]
    raise TinyLMError(f"{spec}: no such file or directory, and not an embedded corpus ({', '.join(CORPORA)})")


def clean_text(text: str) -> str:
    """Normalise line ends, drop control characters (keeping \\n and \\t), and compose to NFC."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))
    return unicodedata.normalize("NFC", text)


def read_text(path: Path) -> str:
    """The whole cleaned text of a plain-text file."""
    with open_binary(path) as f:
        text, invalid = decode(f.read())
    warn_invalid(path, invalid)
    return clean_text(text.removeprefix("\ufeff"))


def compile_template(field: str | None, template: str | None) -> str | None:
    """The template that renders a JSONL record, from `field` or `template` (None if neither is given).

    A literal backslash-n or backslash-t typed on a command line stands for a newline or a tab.
    """
    if field and template:
        raise TinyLMError("give either a field or a template, not both")
    if field:
        return "{" + field + "}"
    if not template:
        return None
    template = template.replace("\\n", "\n").replace("\\t", "\t")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise TinyLMError(f"template {template!r}: {e}") from None
    if not names or any(not name or name.isdigit() for name in names):
        raise TinyLMError(f"template {template!r} must name its fields, e.g. '{{title}}\\n{{text}}'")
    return template


def default_template(path: Path) -> str:
    """An embedded corpus's own template; `{text}` for any other JSONL file."""
    corpus = corpus_for_path(path)
    return corpus.template if corpus and corpus.template else "{text}"


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    return "" if value is None else str(value)


def render(record: dict[str, Any], template: str, where: str) -> str:
    """Fill `template` from one JSON record; `where` ("file:line") names the record in errors."""
    values = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in record:
            raise TinyLMError(
                f"{where}: missing field {name!r}; the record has fields {', '.join(record) or '(none)'}. "
                "Choose one with --field or --template"
            )
        values[name] = _as_text(record[name])
    try:
        return template.format_map(values)
    except ValueError as e:
        raise TinyLMError(f"{where}: template {template!r} cannot render this record: {e}") from None


@dataclasses.dataclass(frozen=True)
class Document:
    """One cleaned document, where it came from, and its record's fields that the text was not made of."""

    text: str
    where: str
    """"file" for a plain-text file, "file:line" for JSONL, "file:row" for Parquet."""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _from_records(rows: Iterator[tuple[str, dict[str, Any]]], template: str) -> Iterator[Document]:
    used = _template_fields(template)
    for where, record in rows:
        text = clean_text(render(record, template, where))
        yield Document(text, where, {k: v for k, v in record.items() if k not in used})


def read_jsonl(path: Path, template: str, skip_bad_lines: bool = False) -> Iterator[Document]:
    """Rendered and cleaned documents of a JSONL file, one per non-blank line (see `jsonl.jsonl_rows`)."""
    hint = "; pass --skip-bad-lines true to skip such lines"
    rows = jsonl_rows(path, skip_bad_lines=skip_bad_lines, allow_empty=True, hint=hint)
    yield from _from_records(rows, template)


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TinyLMError(
            f"{path}: reading Parquet needs pyarrow; install it with `pip install pyarrow`"
        ) from None
    row = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for record in batch.to_pylist():
            row += 1
            yield f"{path}:{row}", record


def read_file(path: Path, template: str | None = None, skip_bad_lines: bool = False) -> Iterator[Document]:
    """The cleaned documents of one corpus file, whitespace-only ones included.

    `template` renders JSONL and Parquet records (None: the file's default, see `default_template`).
    """
    kind = file_kind(path)
    if kind == "text":
        yield Document(read_text(path), str(path))
    elif kind == "jsonl":
        yield from read_jsonl(path, template or default_template(path), skip_bad_lines)
    else:
        yield from _from_records(_parquet_rows(path), template or default_template(path))


def read_documents(
    source: str | Path, field: str | None = None, template: str | None = None, skip_bad_lines: bool = False
) -> Iterator[str]:
    """Clean documents from a corpus (see the module docstring); whitespace-only documents are dropped.

    Raises TinyLMError if the source yields no document at all.
    """
    chosen = compile_template(field, template)
    count = 0
    for path in resolve_source(source):
        for doc in read_file(path, chosen, skip_bad_lines):
            if doc.text.strip():
                count += 1
                yield doc.text
    if count == 0:
        raise TinyLMError(f"{source}: empty corpus (no document holds any text)")
