"""Duplicate rates, drops per rule and throughput of `tinylm data clean` on the real corpora.

    .venv/bin/python benchmarks/clean_corpora.py [--work runs/clean_corpora] [--limit 0] [--processes 1 2]

For the Tang poems and the Song ci (and, with --english, the KJV Bible by verse), runs the cleaning twice:
once with the documented Gopher and C4 defaults (web-text rules: most short poems fall under them, which is
what the per-rule counts show) and once without quality rules (dedup, normalisation and PII only), each
with 1 and with 2 processes, and prints exact / near duplicate rates, the documents dropped per rule, the
largest near-duplicate clusters and MB/s. --limit N cleans only the first N documents of each corpus.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path

from cli_steps import run

from tinylm.io import read_json

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = {
    "tang": (DATA / "zh" / "tang_poems.jsonl", r"{title}\n{paragraphs}"),
    "song_ci": (DATA / "zh" / "song_ci.jsonl", r"{rhythmic}\n{paragraphs}"),
}
ENGLISH = {"kjv": (DATA / "en" / "kjv_bible.jsonl", None)}


def _sliced(path: Path, limit: int, work: Path) -> Path:
    if not limit:
        return path
    out = work / f"{path.stem}.head{limit}.jsonl"
    if not out.exists():
        work.mkdir(parents=True, exist_ok=True)
        with open(path, encoding="utf-8") as f:
            out.write_text("".join(itertools.islice(f, limit)), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/clean_corpora"))
    parser.add_argument("--limit", type=int, default=0, help="documents per corpus (0: all)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--english", action="store_true", help="also the KJV Bible")
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/clean_corpora.py " + shlex.join(sys.argv[1:]))
    corpora = {**CORPORA, **(ENGLISH if args.english else {})}
    rows = []
    for name, (path, template) in corpora.items():
        data = _sliced(path, args.limit, args.work / "data")
        for rules, n in itertools.product(("default", "none"), args.processes):
            out = args.work / f"{name}-{rules}-p{n}"
            cmd = [
                "data",
                "clean",
                "--data",
                str(data),
                "--out",
                str(out),
                "--processes",
                str(n),
                "--overwrite",
                "true",
            ]
            cmd += ["--template", template] if template else []
            cmd += ["--quality", "[]"] if rules == "none" else []
            run(cmd)
            r = read_json(out / "report.json")
            rows.append((name, rules, n, r))
    print("\n| corpus | rules | processes | read | kept | exact dup | near dup | MB/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, rules, n, r in rows:
        d, rate = r["documents"], r["rates"]
        print(
            f"| {name} | {rules} | {n} | {d['read']:,} | {d['kept']:,} | {rate['exact_duplicate']:.2%} | "
            f"{rate['near_duplicate']:.2%} | {r['mb_per_second']:.2f} |"
        )
    for name, rules, n, r in rows:
        if n != args.processes[0]:
            continue
        print(f"\n## {name}, rules {rules}: dropped per rule")
        for rule, count in r["rules"].items():
            print(f"- {rule}: {count:,}")
        for c in r["clusters"]["near"][:3]:
            print(
                f"- near-duplicate cluster of {c['size']}: kept {c['survivor']}: {' '.join(c['text'].split())[:80]}"
            )
            for e in c["dropped"][:1]:
                print(f"    dropped {e['source']}: {' '.join(e['text'].split())[:80]}")


if __name__ == "__main__":
    main()
