"""`tinylm data clean`: read a corpus, filter it, deduplicate it, and write what is kept and why the rest
went.

Pass one streams the documents through the per-document work (`pipeline.py`, in a pool), drops what the
filters drop and exact duplicates of documents already seen, and adds the rest to the LSH index, writing
them to a scratch file. Pass two reads the scratch file back and keeps the first document of every
near-duplicate cluster. Everything is written inside a temporary directory that replaces `out` only when
complete.
"""

from __future__ import annotations

import json
import lzma
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import TinyLMError
from ...io import atomic_dir, check_out_dir, read_json, to_plain, write_yaml
from ..jsonl import warn
from ..readers import Document, compile_template, read_file, resolve_source
from .langid import check_languages
from .lsh import LSHIndex, optimal_bands
from .normalize import FORMS
from .pipeline import Processed, Settings, process_all
from .report import Report, write_report
from .rules import C4Rules, GopherRules

QUALITY = ("gopher", "c4")
SCRATCH = ".candidates.jsonl"


def _readable(
    paths: list[Path], template: str | None, skip_bad_lines: bool, report: Report
) -> Iterator[Document]:
    """Documents of every file; a file that cannot be read is reported, counted and skipped."""
    for path in paths:
        try:
            yield from read_file(path, template, skip_bad_lines)
        except (OSError, EOFError, lzma.LZMAError) as e:
            warn(f"{path}: cannot be read ({e}); skipped")
            report.unreadable.append({"file": str(path), "error": str(e)})


def _dropped(f, reason: str, rule: str, text: str, source: str, duplicate_of: str | None = None) -> None:
    row = {"reason": reason, "rule": rule, "text": text, "source": source, "duplicate_of": duplicate_of}
    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _first_pass(
    processed: Iterator[Processed], bands: int, dropped, scratch, report: Report, bar
) -> LSHIndex:
    """Filters and exact dedup; survivors go to `scratch` and into the LSH index, by candidate number."""
    first_copy: dict[bytes, int] = {}
    sources: list[str] = []
    index = LSHIndex(bands)
    for p in processed:
        report.count_document(p)
        bar.update(len(p.doc.text.encode("utf-8")))
        if p.drop:
            _dropped(dropped, *p.drop, p.text, p.doc.where)
            continue
        first = first_copy.setdefault(p.key, len(sources))
        if first != len(sources):
            report.exact.add(first, p.doc.where, p.text)
            report.stages["exact_duplicate"] += 1
            _dropped(dropped, "exact_duplicate", "exact_duplicate", p.text, p.doc.where, sources[first])
            continue
        if bands and p.bands:
            index.add(len(sources), p.bands)
        row = {"text": p.text, "where": p.doc.where, "fields": p.doc.fields, "language": p.language}
        scratch.write(json.dumps(row, ensure_ascii=False) + "\n")
        sources.append(p.doc.where)
    report.sources = sources
    return index


def _second_pass(scratch: Path, index: LSHIndex, kept, dropped, report: Report) -> None:
    """Keep each candidate that is the first of its near-duplicate cluster; drop the others."""
    find = index.clusters.find
    report.near.wanted = {find(x) for x in list(index.clusters.parent)}
    with open(scratch, encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            root = find(i)
            report.exact.describe(i, row["text"])
            if root != i:
                report.near.add(root, row["where"], row["text"])
                report.stages["near_duplicate"] += 1
                _dropped(
                    dropped, "near_duplicate", "minhash_lsh", row["text"], row["where"], report.sources[root]
                )
                continue
            report.near.describe(i, row["text"])
            record = {**row["fields"], "text": row["text"], "source": row["where"]}
            if row["language"]:
                record["language"] = row["language"]
            kept.write(json.dumps(record, ensure_ascii=False) + "\n")
            report.kept += 1
            report.kept_bytes += len(row["text"].encode("utf-8"))


def clean_corpus(
    data: str,
    out: str,
    field: str | None = None,
    template: str | None = None,
    skip_bad_lines: bool = False,
    languages: list[str] | None = None,
    quality: list[str] | None = None,
    gopher: GopherRules | None = None,
    c4: C4Rules | None = None,
    pii: bool = True,
    threshold: float = 0.8,
    num_perm: int = 128,
    near_dedup: bool = True,
    seed: int = 1,
    normalization: str = "NFC",
    processes: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Clean a corpus before tokenising: normalise, filter by quality and language, scrub PII, deduplicate.

    Args:
        data: Corpus: an embedded name (see `tinylm data list`), a .txt / .jsonl / .parquet file, a glob or a
            directory.
        out: Output directory for kept.jsonl, dropped.jsonl, report.json, report.md and config.yaml.
        field: JSONL field that holds each document's text.
        template: JSONL template instead of a field, e.g. '{title}\\n{paragraphs}' (lists joined by newlines).
        skip_bad_lines: Skip (and count) JSONL lines that are not JSON objects instead of stopping.
        languages: Keep only documents identified (py3langid) as one of these ISO 639-1 codes, e.g. en zh;
            default: keep every language and skip identification.
        quality: Quality rule sets to apply, from gopher and c4 (default: both; [] for none).
        gopher: Gopher rule settings (datatrove's GopherQualityFilter defaults; None switches a rule off).
        c4: C4 rule settings (datatrove's C4QualityFilter defaults; -1 or false switches a rule off).
        pii: Replace e-mail addresses, phone numbers and ID-like numbers by <EMAIL>, <PHONE>, <ID>.
        threshold: Jaccard similarity of 5-gram shingles above which documents are near-duplicates.
        num_perm: MinHash permutations (the signature length).
        near_dedup: Remove near-duplicates with MinHash LSH (exact duplicates are always removed).
        seed: Seed of the MinHash hash functions.
        normalization: Unicode form of the kept text: NFC (keeps full-width punctuation) or NFKC.
        processes: Processes for the per-document work (1: in this process).
        overwrite: Replace an output directory that holds a different run.

    Returns:
        The report (also written to out/report.json).
    """
    quality = list(QUALITY) if quality is None else quality
    unknown = [q for q in quality if q not in QUALITY]
    if unknown:
        raise TinyLMError(f"quality: unknown rule set(s) {unknown}; expected some of {', '.join(QUALITY)}")
    if normalization not in FORMS:
        raise TinyLMError(f"normalization must be one of {', '.join(FORMS)}, got {normalization!r}")
    if processes < 1:
        raise TinyLMError(f"processes must be at least 1, got {processes}")
    bands, rows = optimal_bands(threshold, num_perm) if near_dedup else (0, 0)
    if languages:
        check_languages(languages)
    settings = Settings(
        normalization=normalization,
        languages=languages or None,
        gopher=(gopher or GopherRules()) if "gopher" in quality else None,
        c4=(c4 or C4Rules()) if "c4" in quality else None,
        pii=pii,
        num_perm=num_perm,
        seed=seed,
        bands=bands,
        rows=rows,
    )
    config = {
        "data": data,
        "field": field,
        "template": template,
        "skip_bad_lines": skip_bad_lines,
        "threshold": threshold,
        "near_dedup": near_dedup,
        **to_plain(asdict(settings)),
    }
    if check_out_dir(out, config, overwrite):
        print(f"clean: {out} already holds this cleaning; skipping")
        return read_json(Path(out) / "report.json")
    paths = resolve_source(data)
    chosen = compile_template(field, template)
    report = Report(source=data, files=len(paths), settings=config, processes=processes)
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        with (
            open(tmp / "dropped.jsonl", "w", encoding="utf-8") as dropped,
            open(tmp / "kept.jsonl", "w", encoding="utf-8") as kept,
        ):
            with (
                open(tmp / SCRATCH, "w", encoding="utf-8") as scratch,
                tqdm(desc="cleaning", unit="B", unit_scale=True, disable=None) as bar,
            ):
                docs = _readable(paths, chosen, skip_bad_lines, report)
                index = _first_pass(
                    process_all(docs, settings, processes), bands, dropped, scratch, report, bar
                )
            _second_pass(tmp / SCRATCH, index, kept, dropped, report)
        (tmp / SCRATCH).unlink()
        if report.read == 0:
            raise TinyLMError(f"{data}: no document could be read")
        report.seconds = time.perf_counter() - start
        summary = report.to_dict()
        write_report(tmp, summary)
        write_yaml(tmp / "config.yaml", config)
    print(
        f"clean: kept {report.kept:,} of {report.read:,} documents "
        f"({summary['rates']['exact_duplicate']:.1%} exact and {summary['rates']['near_duplicate']:.1%} "
        f"near duplicates) -> {out}"
    )
    return summary
