"""`tinylm generate`: complete one prompt (streamed to the terminal) or a file of prompts (batched, JSONL out)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from ..data.jsonl import jsonl_rows
from ..errors import TinyLMError
from ..io import atomic_file
from .engine import Engine, Sequence
from .sampling import SamplingParams
from .speculative import make_speculator


def read_prompts(path: Path) -> list[str]:
    """Prompts from a .jsonl file (a "prompt" field per line) or a text file (one prompt per non-empty line)."""
    if not Path(path).is_file():
        raise TinyLMError(f"--prompts_file {path} does not exist")
    if Path(path).suffix != ".jsonl":
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for where, row in jsonl_rows(path, ("prompt",)):
        if not isinstance(row["prompt"], str):
            raise TinyLMError(f'{where}: expected a string "prompt" field')
        prompts.append(row["prompt"])
    return prompts


def generate(
    model: Path,
    prompt: str | None = None,
    prompts_file: Path | None = None,
    chat: bool = False,
    system: str | None = None,
    sampling: SamplingParams | None = None,
    batch_size: int = 16,
    out: Path | None = None,
    device: str = "cpu",
    quantize: Literal["none", "int4"] = "none",
    speculative: Literal["none", "lookup", "draft"] = "none",
    draft_model: Path | None = None,
    draft_tokens: int = 4,
) -> list[Sequence]:
    """Generate text from a checkpoint, for one prompt or a file of prompts.

    One `--prompt` streams its completion to stdout. `--prompts_file` decodes all prompts in batches and
    writes one JSON line per prompt (prompt, text, finish_reason, token counts) to stdout or `--out`.

    Args:
        model: Checkpoint directory (model weights, config and tokenizer files).
        prompt: The text to continue.
        prompts_file: A .jsonl file with a "prompt" field per line, or a text file with one prompt per line.
        chat: Wrap each prompt as a user message in the model's chat template (and stop at end of turn).
        system: System message placed before the user message when `chat` is set.
        sampling: How to decode (`--sampling.help` lists the options); prompt i of a file uses seed + i.
        batch_size: Prompts decoded together.
        out: JSONL output file for `--prompts_file` (default: stdout).
        device: Torch device (cpu, cuda).
        quantize: "int4" stores the Transformer blocks' weights as 4-bit integers for several times faster
            decoding on a CPU (lossless for checkpoints imported from a Q4_1 GGUF); "none" keeps them as saved.
        speculative: Speculative decoding, for lower latency when one sequence decodes: "lookup" drafts
            by copying from the prompt and output, "draft" with `--draft_model`; the output's distribution
            (and greedy text) stays that of plain decoding.
        draft_model: Checkpoint directory of a small model on the same tokenizer, for `--speculative draft`.
        draft_tokens: Most tokens drafted per step.
    """
    if (prompt is None) == (prompts_file is None):
        raise TinyLMError("give exactly one of --prompt or --prompts_file")
    if batch_size < 1:
        raise TinyLMError(f"--batch_size must be >= 1, got {batch_size}")
    params = sampling or SamplingParams()
    engine = Engine.load(model, device, batch_size, quantize)
    engine.speculator = make_speculator(
        speculative, draft_model, draft_tokens, engine.model, engine.tokenizer, quantize
    )
    if engine.quantization:
        print(f"tinylm: {engine.quantization}", file=sys.stderr)
    texts = [prompt] if prompt is not None else read_prompts(prompts_file)
    if chat:
        head = [{"role": "system", "content": system}] if system else []
        texts = [engine.chat_prompt([*head, {"role": "user", "content": t}]) for t in texts]
    if prompt is not None:
        seq = engine.sequence(texts[0], params)
        for piece in engine.stream(seq):
            print(piece, end="", flush=True)
        print()
        return [seq]
    seqs = engine.generate(texts, params)
    records = [
        {
            "prompt": p,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "prompt_tokens": len(s.prompt_ids),
            "completion_tokens": len(s.token_ids),
        }
        for p, s in zip(read_prompts(prompts_file), seqs, strict=True)
    ]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if out is None:
        sys.stdout.write(lines)
    else:
        with atomic_file(out) as f:
            f.write(lines)
    return seqs
