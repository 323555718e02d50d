"""What `tinylm data clean` did: counts per stage and per rule, duplicate rates, the largest duplicate
clusters with example texts, and throughput -- as report.json and report.md."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...io import atomic_file, read_json, write_json
from .pipeline import Processed

SNIPPET = 200
EXAMPLES = 3
TOP = 10
STAGES = ("empty", "language", "quality", "exact_duplicate", "near_duplicate")


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "…"


@dataclass
class Clusters:
    """Duplicate clusters by their survivor: how many were dropped for it, and a few of them."""

    dropped: Counter = field(default_factory=Counter)
    examples: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    survivors: dict[int, str] = field(default_factory=dict)
    wanted: set[int] = field(default_factory=set)

    def add(self, survivor: int, source: str, text: str) -> None:
        self.dropped[survivor] += 1
        shown = self.examples.setdefault(survivor, [])
        if len(shown) < EXAMPLES:
            shown.append({"source": source, "text": _snippet(text)})

    def describe(self, index: int, text: str) -> None:
        """Remember the text of candidate `index` if it is the survivor of a cluster."""
        if index in self.dropped or index in self.wanted:
            self.survivors[index] = _snippet(text)

    def top(self, sources: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "survivor": sources[i],
                "size": n + 1,
                "text": self.survivors.get(i, ""),
                "dropped": self.examples[i],
            }
            for i, n in self.dropped.most_common(TOP)
        ]


@dataclass
class Report:
    source: str
    files: int
    settings: dict[str, Any]
    processes: int
    unreadable: list[dict[str, str]] = field(default_factory=list)
    read: int = 0
    read_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    stages: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)
    c4_lines: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    exact: Clusters = field(default_factory=Clusters)
    near: Clusters = field(default_factory=Clusters)
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count_document(self, p: Processed) -> None:
        self.read += 1
        self.read_bytes += len(p.doc.text.encode("utf-8"))
        if p.language:
            self.languages[p.language] += 1
        self.c4_lines.update(p.c4_lines)
        self.pii.update(p.pii)
        if p.drop:
            self.stages[p.drop[0]] += 1
            self.rules[p.drop[1]] += 1

    def to_dict(self) -> dict[str, Any]:
        filtered = sum(self.stages[s] for s in ("empty", "language", "quality"))
        deduplicated = self.read - filtered
        exact = self.stages["exact_duplicate"]
        return {
            "source": self.source,
            "files": self.files,
            "unreadable_files": self.unreadable,
            "documents": {"read": self.read, "kept": self.kept, "dropped": self.read - self.kept},
            "bytes": {"read": self.read_bytes, "kept": self.kept_bytes},
            "stages": {s: self.stages[s] for s in STAGES},
            "rules": dict(self.rules.most_common()),
            "c4_lines_dropped": {f"line-filter-{k}": v for k, v in self.c4_lines.most_common()},
            "pii_replaced": dict(self.pii.most_common()),
            "languages": dict(self.languages.most_common()),
            "rates": {
                "exact_duplicate": exact / deduplicated if deduplicated else 0.0,
                "near_duplicate": self.stages["near_duplicate"] / (deduplicated - exact)
                if deduplicated > exact
                else 0.0,
            },
            "lsh": {k: self.settings[k] for k in ("threshold", "num_perm", "bands", "rows", "seed")},
            "clusters": {"exact": self.exact.top(self.sources), "near": self.near.top(self.sources)},
            "processes": self.processes,
            "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.read_bytes / 1e6 / self.seconds, 3) if self.seconds else 0.0,
        }


def _table(header: tuple[str, str], counts: dict[str, int], total: int) -> list[str]:
    rows = [f"| {header[0]} | {header[1]} | share |", "|---|---:|---:|"]
    rows += [f"| {k} | {v:,} | {v / total:.2%} |" for k, v in counts.items()] if total else []
    return rows


def _quoted(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(r: dict[str, Any]) -> str:
    d, lsh = r["documents"], r["lsh"]
    lines = [
        f"# Cleaning of `{r['source']}`",
        "",
        f"{d['read']:,} documents read from {r['files']} file(s), {d['kept']:,} kept "
        f"({r['bytes']['kept']:,} of {r['bytes']['read']:,} bytes); {r['processes']} process(es), "
        f"{r['seconds']:.1f} s, {r['mb_per_second']:.2f} MB/s.",
        "",
        f"Exact duplicates: {r['rates']['exact_duplicate']:.2%} of the documents that passed the filters; "
        f"near duplicates (MinHash LSH, Jaccard ≥ {lsh['threshold']}, {lsh['bands']} bands × {lsh['rows']} "
        f"rows of {lsh['num_perm']}): {r['rates']['near_duplicate']:.2%} of the rest.",
        "",
        "## Dropped per stage",
        "",
        *_table(("stage", "documents"), r["stages"], d["read"]),
        "",
        "## Dropped per rule",
        "",
        *_table(("rule", "documents"), r["rules"], d["read"]),
    ]
    for title, key in (
        ("C4 lines dropped", "c4_lines_dropped"),
        ("PII replaced", "pii_replaced"),
        ("Languages identified", "languages"),
    ):
        if r[key]:
            lines += ["", f"## {title}", "", "| what | count |", "|---|---:|"]
            lines += [f"| {k} | {v:,} |" for k, v in r[key].items()]
    if r["unreadable_files"]:
        lines += ["", "## Unreadable files (skipped)", ""]
        lines += [f"- `{u['file']}`: {u['error']}" for u in r["unreadable_files"]]
    for kind in ("exact", "near"):
        clusters = r["clusters"][kind]
        if clusters:
            lines += ["", f"## Largest {kind}-duplicate clusters", ""]
            for c in clusters:
                lines.append(f"- {c['size']} copies, kept `{c['survivor']}`: {_quoted(c['text'])}")
                lines += [f"  - dropped `{e['source']}`: {_quoted(e['text'])}" for e in c["dropped"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json and report.md in `out`."""
    write_json(out / "report.json", report)
    with atomic_file(out / "report.md") as f:
        f.write(to_markdown(report))


def summarize(out: str | os.PathLike) -> str:
    """A Markdown paragraph on a cleaning directory, for the pipeline's report."""
    r = read_json(Path(out) / "report.json")
    d, s = r["documents"], r["stages"]
    dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s.items() if v) or "nothing"
    return (
        f"Cleaned `{r['source']}`: kept {d['kept']:,} of {d['read']:,} documents (dropped: {dropped}); "
        f"exact duplicates {r['rates']['exact_duplicate']:.2%}, near duplicates {r['rates']['near_duplicate']:.2%}. "
        "Details in the stage's report.md."
    )
