"""Every `tinylm` verb: the function it runs and the line `tinylm --help` shows for it.

The function is named as "module:function" and imported only when its verb runs, so `tinylm --help` (and
`tinylm data --help`) print from this table alone, without importing a single stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One verb: where its function lives and what the help says about it."""

    target: str
    """"module:function" of the plain Python function the verb runs."""
    summary: str
    """The first line of the function's docstring (a test keeps the two equal)."""
    positional: bool = False
    """Its required arguments are positional (`tinylm info MODEL`); all others take --options."""
    options: str | None = None
    """"module:function(parser)" adding the options by hand, for a command whose signature cannot list them
    (the pipeline's recipe); such a command receives its options as plain values and checks them itself."""


COMMANDS: dict[str, Command] = {
    "pipeline": Command(
        "tinylm.pipeline.run:run_pipeline",
        "Run a recipe's stages in order into one run directory, skipping stages already done.",
        options="tinylm.pipeline.recipe:add_pipeline_options",
    ),
    "tokenizer train": Command(
        "tinylm.data.bpe:train_tokenizer",
        "Train a byte-level BPE tokenizer on a corpus and save it where `transformers` can load it.",
    ),
    "data list": Command(
        "tinylm.data.corpora:print_corpora",
        "List the corpora embedded in tinylm; each name works wherever a data path does.",
    ),
    "data prepare": Command(
        "tinylm.data.shards:prepare_shards",
        "Tokenise a corpus into train / validation token shards for pretraining and evaluation.",
    ),
    "data clean": Command(
        "tinylm.data.clean.run:clean_corpus",
        "Clean a corpus before tokenising: normalise, filter by quality and language, scrub PII, deduplicate.",
    ),
    "data make": Command(
        "tinylm.tasks.make:make_task",
        "Build task data from real corpora (poems, preferences, sentiment-zh, sentiment-en, kjv, arithmetic).",
        positional=True,
    ),
    "data judge": Command(
        "tinylm.eval.judge:judge_pairs",
        "Sample answers to DATA's prompts from MODEL and keep the best and the worst of each as a preference pair.",
    ),
    "import hf": Command(
        "tinylm.interop.hf:import_hf",
        "Import a Hugging Face model directory (Llama / SmolLM2 / Qwen2 / BERT / MiniLM / T5) as a tinylm checkpoint.",
        positional=True,
    ),
    "import gguf": Command(
        "tinylm.interop.gguf:import_gguf",
        "Import a GGUF model file (Llama or Qwen2 architecture) as a tinylm checkpoint.",
        positional=True,
    ),
    "export hf": Command(
        "tinylm.interop.hf:export_hf",
        "Export a tinylm checkpoint as a directory that transformers loads (AutoModelForCausalLM, AutoModelForMaskedLM or T5ForConditionalGeneration).",
        positional=True,
    ),
    "export gguf": Command(
        "tinylm.interop.gguf_export:export_gguf",
        "Export a tinylm decoder checkpoint (Llama or Qwen2 shaped) as a GGUF file that llama.cpp loads.",
        positional=True,
    ),
    "info": Command(
        "tinylm.models.info:model_info",
        "Print a model's config, parameter counts and training FLOPs per token.",
        positional=True,
    ),
    "embed": Command(
        "tinylm.infer.embed:embed",
        "Embed texts as unit vectors (mean-pooled final hidden states), one JSON line per text.",
    ),
    "generate": Command(
        "tinylm.infer.generate:generate",
        "Generate text from a checkpoint, for one prompt or a file of prompts.",
    ),
    "chat": Command(
        "tinylm.infer.chat:chat", "Chat with a model in the terminal, replies streamed as they are generated."
    ),
    "ime": Command(
        "tinylm.ime.cli:ime",
        "Turn pinyin into ranked Chinese candidates, with or without tones and spaces, or interactively.",
        options="tinylm.ime.cli:add_ime_options",
    ),
    "serve": Command(
        "tinylm.serve.app:serve",
        "Serve a checkpoint over an OpenAI-compatible HTTP API, with a chat page at `/`.",
    ),
    "pretrain": Command(
        "tinylm.train.stages.pretrain:pretrain", "Pretrain a language model from scratch on token shards."
    ),
    "sft": Command(
        "tinylm.train.stages.sft:sft",
        "Fine-tune a model on conversations (loss on assistant turns only), fully, partially, frozen or with LoRA.",
    ),
    "distill": Command(
        "tinylm.train.stages.distill:distill",
        "Distill a teacher's next-token distributions into a student model (e.g. a draft for speculative decoding).",
    ),
    "eval bpb": Command(
        "tinylm.eval.bpb:eval_bpb",
        "Score a checkpoint in bits per byte on a whole split of token shards or a corpus.",
    ),
    "eval run": Command(
        "tinylm.eval.run:eval_run",
        "Score a model on a task's held-out prompts: mean reward, the task's metrics, KL to a reference.",
        positional=True,
    ),
    "vectors train": Command(
        "tinylm.vectors.cli:train_vectors",
        "Train word vectors (word2vec skip-gram with negative sampling) on a corpus.",
    ),
    "vectors neighbours": Command(
        "tinylm.vectors.cli:vectors_neighbours",
        "Print the words nearest to WORD (cosine similarity) in word vectors or a model's embeddings.",
        positional=True,
    ),
    "vectors analogy": Command(
        "tinylm.vectors.cli:vectors_analogy",
        'Print answers to "A is to B as C is to ?" (the words nearest to B - A + C, the three excluded).',
        positional=True,
    ),
    "vectors eval": Command(
        "tinylm.vectors.cli:vectors_eval",
        "Score word vectors (or a model's embeddings) on WordSim-353 (Spearman) and the Google analogies.",
        positional=True,
    ),
    "reward train": Command(
        "tinylm.train.stages.reward:reward_train",
        "Train a reward model on preference pairs with the Bradley–Terry loss; report held-out pairwise accuracy.",
    ),
    "reward score": Command(
        "tinylm.eval.reward_model:reward_score",
        "Score a JSONL file with a reward model: pairwise accuracy of preference rows, or each conversation's reward.",
    ),
    "dpo": Command(
        "tinylm.train.stages.dpo:dpo",
        "Align a model on preference pairs with DPO (reference log-probabilities precomputed once).",
    ),
    "ppo": Command(
        "tinylm.train.stages.ppo:ppo",
        "RLHF with PPO: policy, frozen reference, value head, and a learned or verifiable reward.",
    ),
    "grpo": Command(
        "tinylm.train.stages.grpo:grpo",
        "Align a model with GRPO on a verifiable reward: group sampling, group-normalised advantages, KL to reference.",
    ),
    "ngram train": Command(
        "tinylm.ngram.cli:ngram_train",
        "Train an n-gram language model on a corpus or token shards and score it on the held-out split.",
    ),
    "ngram eval": Command(
        "tinylm.ngram.cli:ngram_eval",
        "Score an n-gram model (directory or ARPA file) in bits per byte and perplexity on a split.",
    ),
    "ngram generate": Command(
        "tinylm.ngram.cli:ngram_generate",
        "Sample text from an n-gram model, seeded, each sample until </s> or max_tokens.",
    ),
    "ngram export": Command(
        "tinylm.ngram.cli:ngram_export",
        "Write an n-gram model as an ARPA file (log10 probabilities and backoff weights) that KenLM loads.",
    ),
    "scaling sweep": Command(
        "tinylm.scaling.sweep:run_sweep",
        "Pretrain a grid of model sizes × budgets (IsoFLOP or steps), one row of loss, size and compute per run.",
    ),
    "scaling fit": Command(
        "tinylm.scaling.cli:scaling_fit",
        "Fit L(N, D) = E + A/N^α + B/D^β (Chinchilla approach 3) and the IsoFLOP parabolas (approach 2) to a sweep.",
    ),
    "scaling predict": Command(
        "tinylm.scaling.cli:scaling_predict",
        "Predict a run's loss from a fitted law, or the compute-optimal size and data for a FLOP budget.",
    ),
}

GROUPS: dict[str, str] = {
    "tokenizer": "Train byte-level BPE tokenizers.",
    "data": "Embedded corpora, cleaning, token shards and task data.",
    "import": "Import models from Hugging Face directories and GGUF files.",
    "export": "Export tinylm checkpoints to Hugging Face directories and GGUF files (llama.cpp).",
    "eval": "Score models: bits per byte, tasks.",
    "vectors": "Word vectors: train word2vec, nearest neighbours, analogies, scores; also a model's embeddings.",
    "reward": "Reward models: train on preference pairs, score conversations.",
    "ngram": "N-gram language models: train (modified Kneser-Ney and others), score, sample, export ARPA.",
    "scaling": "Scaling laws: sweep sizes × budgets, fit L(N, D), predict bigger runs.",
}
"""Help text of each group of two-word verbs (`tinylm data --help`)."""


def load(target: str) -> Callable:
    """The function named by "module:function", imported now."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def load_command(path: str) -> Callable:
    """The function behind verb `path` ("data prepare"), imported on first use."""
    return load(COMMANDS[path].target)
