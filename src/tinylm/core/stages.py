"""The main job's stages: each names its command and declares the artifacts it takes and makes.

An artifact kind names what flows between stages (a tokenizer, shards, a model). The pipeline feeds each
stage's inputs from the latest earlier stage of the recipe that outputs that kind, so a stage never names
another stage's directory: PPO, DPO and GRPO take the latest `policy` (the SFT model), the chat takes the
latest `model` (the last one trained), and a new stage is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One step of the main job: a command plus what it takes, makes and reports."""

    command: str
    """Key of the command in `COMMANDS`."""
    summary: str
    """"module:function" turning the stage's directory into Markdown for report.md."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Parameter -> artifact kind it needs. Unless the recipe sets the parameter itself, the latest earlier
    stage that outputs that kind supplies it (the recipe's `data` is the `corpus`); none is an error."""
    optional: dict[str, str] = field(default_factory=dict)
    """Like `inputs`, but with no earlier stage to supply it the parameter keeps the recipe's value (or None)."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Artifact kind -> where it lands, as a path inside the stage's directory ("" for the directory)."""
    writes: dict[str, str] = field(default_factory=lambda: {"out": ""})
    """Parameter -> path inside the stage's directory that the command writes to (not a recipe option)."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """Options the stage always passes (not recipe options): `preference_data` is `data make preferences`."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Recipe defaults: the command's required options, and values that suit a pipeline better."""


RUN_SUMMARY = "tinylm.train.report:summarize_run"
TASK_SUMMARY = "tinylm.tasks.make:summarize"

STAGES: dict[str, Stage] = {
    "clean": Stage(
        "data clean",
        "tinylm.data.clean.report:summarize",
        inputs={"data": "corpus"},
        outputs={"corpus": "kept.jsonl"},
    ),
    "tokenizer": Stage(
        "tokenizer train", "tinylm.data.bpe:summarize", inputs={"data": "corpus"}, outputs={"tokenizer": ""}
    ),
    "shards": Stage(
        "data prepare",
        "tinylm.data.shards:summarize",
        inputs={"data": "corpus", "tokenizer": "tokenizer"},
        outputs={"shards": ""},
    ),
    "pretrain": Stage("pretrain", RUN_SUMMARY, inputs={"shards": "shards"}, outputs={"model": "model"}),
    "sft_data": Stage(
        "data make", TASK_SUMMARY, outputs={"sft_data": "", "prompts": ""}, defaults={"task": "poems"}
    ),
    "sft": Stage(
        "sft",
        RUN_SUMMARY,
        inputs={"model": "model", "data": "sft_data"},
        outputs={"model": "model", "policy": "model"},
    ),
    "preference_data": Stage(
        "data make", TASK_SUMMARY, outputs={"preferences": ""}, fixed={"task": "preferences"}
    ),
    "reward": Stage(
        "reward train",
        RUN_SUMMARY,
        inputs={"data": "preferences", "model": "policy"},
        outputs={"reward_model": "model"},
    ),
    "ppo": Stage(
        "ppo",
        RUN_SUMMARY,
        inputs={"data": "prompts", "model": "policy"},
        optional={"reward_model": "reward_model"},
        outputs={"model": "model"},
    ),
    "dpo": Stage(
        "dpo", RUN_SUMMARY, inputs={"data": "preferences", "model": "policy"}, outputs={"model": "model"}
    ),
    "grpo": Stage(
        "grpo", RUN_SUMMARY, inputs={"data": "prompts", "model": "policy"}, outputs={"model": "model"}
    ),
    "judge": Stage(
        "data judge",
        "tinylm.eval.judge:summarize",
        inputs={"model": "policy", "data": "prompts"},
        outputs={"preferences": ""},
    ),
    "distill": Stage(
        "distill",
        RUN_SUMMARY,
        inputs={"teacher": "model", "shards": "shards"},
        outputs={"draft": "model"},
    ),
    "chat": Stage(
        "chat",
        "tinylm.infer.chat:summarize",
        inputs={"model": "model"},
        writes={"transcript": "transcript.md"},
        defaults={"sampling": {"temperature": 0.0, "max_new_tokens": 96}, "say": ["Hello!"]},
    ),
}
