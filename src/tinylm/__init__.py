"""tinylm: the whole life of a language model, runnable on a laptop CPU.

Everything the `tinylm` command does is a plain function here first::

    from tinylm import train_tokenizer, prepare_shards, run_pipeline

Names are imported lazily, so `import tinylm` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "TinyLMError": "tinylm.errors",
    "run_pipeline": "tinylm.pipeline",
    "train_tokenizer": "tinylm.data.bpe",
    "Tokenizer": "tinylm.tokenizer",
    "read_documents": "tinylm.data.readers",
    "resolve_source": "tinylm.data.readers",
    "prepare_shards": "tinylm.data.shards",
    "TokenShards": "tinylm.data.shards",
    "ModelConfig": "tinylm.models",
    "build_model": "tinylm.models",
    "load_model": "tinylm.models",
    "save_model": "tinylm.models",
    "import_hf": "tinylm.interop.hf",
    "import_gguf": "tinylm.interop.gguf",
    "export_hf": "tinylm.interop.hf",
    "TrainConfig": "tinylm.train",
    "train": "tinylm.train",
    "pretrain": "tinylm.train.stages.pretrain",
    "sft": "tinylm.train.stages.sft",
    "dpo": "tinylm.train.stages.dpo",
    "ppo": "tinylm.train.stages.ppo",
    "grpo": "tinylm.train.stages.grpo",
    "eval_bpb": "tinylm.eval.bpb",
    "eval_run": "tinylm.eval.run",
    "Engine": "tinylm.infer",
    "SamplingParams": "tinylm.infer",
    "make_task": "tinylm.tasks.make",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tinylm' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
