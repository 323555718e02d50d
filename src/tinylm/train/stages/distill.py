"""`tinylm distill`: a student learns a teacher's next-token distributions on token shards
(`tinylm.train.objectives.distill`), e.g. a small draft model for speculative decoding.

The student is a given checkpoint, a fresh `--model.*` shape, or the teacher's first N blocks with its
embedding, final norm and head (`--from_teacher_layers N`, `tinylm.models.layer_skip`); it is saved with
the teacher's tokenizer. The teacher is frozen, in eval mode, optionally int4. results.json adds, over the
whole validation split before and after training, KL to the teacher, the agreement rate (the student's most
likely token is the teacher's: what predicts speculative acceptance) and bits per byte, the teacher's too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ...data.shards import RandomWindows, TokenShards, sequential_windows
from ...errors import TinyLMError
from ...eval.bits import bits_per_byte
from ...eval.bpb import check_context
from ...infer.speculative import check_same_vocabulary
from ...models import (
    Backbone,
    ModelConfig,
    build_model,
    get_family,
    load_model,
    model_flops_per_token,
    require_generative,
)
from ...models.layer_skip import first_layers
from ...models.quant import quantize_int4
from ...tokenizer import Tokenizer
from ..config import TrainConfig
from ..loop import Objective
from ..objectives.distill import Distillation, held_out_scores
from ..stage import Plan, Run, recorded, run_stage


def distill(
    teacher: str,
    shards: str,
    out: str,
    student: str | None = None,
    from_teacher_layers: int | None = None,
    model: ModelConfig | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    teacher_quantize: Literal["none", "int4"] = "none",
    train: TrainConfig | None = None,
    context: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Distill a teacher's next-token distributions into a student model (e.g. a draft for speculative decoding).

    Args:
        teacher: The teacher's model directory (a decoder-only model with its tokenizer files).
        shards: Token shards made with the teacher's tokenizer (`tinylm data prepare`); the val split is held out.
        out: Run directory. Rerunning the same command there resumes from the last checkpoint.
        student: Student checkpoint to start from (on the teacher's tokenizer).
        from_teacher_layers: Start the student as the teacher's first N blocks, embedding, final norm and head.
        model: Shape of a fresh student (`--model.preset 1m`, `--model.n_layer 2` ...); vocab_size follows
            the teacher. Default when neither student nor from_teacher_layers is given.
        temperature: Softmax temperature T of both distributions in the KL term (scaled by T²).
        alpha: Weight of the ordinary next-token cross-entropy in the loss; the KL term gets 1 - alpha.
        teacher_quantize: Run the teacher with int4 weights (faster on CPU, slightly different targets).
        train: Optimizer, schedule, budget (train.max_steps / train.max_time) and bookkeeping.
        context: Window length in tokens (default: the shorter max_seq_len of the two models).
        overwrite: Replace an output directory that holds a different run.
    """
    arguments, train = dict(locals()), train or TrainConfig()
    if sum(x is not None for x in (student, from_teacher_layers, model)) > 1:
        raise TinyLMError(
            "give at most one of --student, --from_teacher_layers and --model.* for the student"
        )
    if temperature <= 0:
        raise TinyLMError(f"--temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise TinyLMError(f"--alpha must be in [0, 1], got {alpha}")
    tok = Tokenizer.load(teacher)
    data = TokenShards.open(shards)
    data.check_tokenizer(tok)
    big = load_model(teacher)
    _require_decoder(big.config, "--teacher", teacher)
    config, make, init = _student(big, tok, student, from_teacher_layers, model)
    context = context or min(config.max_seq_len, big.config.max_seq_len)
    check_context(context, min(config.max_seq_len, big.config.max_seq_len))
    train_tokens, val_tokens = data.split("train"), data.split("val")
    if len(val_tokens) <= context:
        raise TinyLMError(
            f"{shards}: the val split ({len(val_tokens)} tokens) is too short for one window of {context} "
            "tokens; distillation is scored on it (prepare the shards with a larger --val_fraction)"
        )
    record = recorded(arguments, model=config, train=train, context=context)
    record["tokenizer_hash"] = tok.hash

    def build(run: Run) -> Plan:
        small = make().to(run.device).eval()
        big.requires_grad_(False).to(run.device)
        if teacher_quantize == "int4":
            print(f"distill: teacher {quantize_int4(big)}")
        objective = Distillation(big, temperature, alpha)
        windows = RandomWindows(train_tokens, context, train.batch_size, seed=train.seed)
        held = RandomWindows(val_tokens, context, train.batch_size, seed=train.seed + 1)

        def evaluate(m: nn.Module) -> dict[str, float]:
            batches = (held.batch(i) for i in range(train.eval_batches))
            return held_out_scores(objective.compare(m, batches, run.device))

        def whole_split(m: nn.Module) -> dict[str, float]:
            sums = objective.compare(m, sequential_windows(val_tokens, context, train.batch_size), run.device)
            n_bytes = data.manifest["splits"]["val"]["bytes"]
            scores = held_out_scores(sums)
            return {
                "val_kl": scores["val_kl"],
                "val_agreement": scores["val_agreement"],
                "val_bpb": bits_per_byte(sums["nll"], n_bytes),
                "teacher_val_bpb": bits_per_byte(sums["teacher_nll"], n_bytes),
                "val_positions": sums["positions"],
            }

        before = whole_split(small)
        small.train()
        tokens_per_step = train.batch_size * train.grad_accum * run.dist.world_size * context
        if run.dist.is_main:
            print(
                f"distill: student {init}; {len(train_tokens):,} training tokens, {tokens_per_step:,} per step"
            )
            print(_scores("before", before))

        def report(final: nn.Module, result) -> dict[str, Any]:
            after = whole_split(final)
            print(_scores("after", after))
            student_scores = ("val_kl", "val_agreement", "val_bpb")
            return {
                "student_init": init,
                "temperature": temperature,
                "alpha": alpha,
                "teacher_quantize": teacher_quantize,
                "tokens_seen": result.step * tokens_per_step,
                **{f"{k}_before": before[k] for k in student_scores},
                **{f"{k}_after": after[k] for k in student_scores},
                "teacher_val_bpb": before["teacher_val_bpb"],
                "val_positions": before["val_positions"],
            }

        flops = model_flops_per_token(config, context) + model_flops_per_token(big.config, context) // 3
        card = [
            f"Distilled from `{teacher}` on `{shards}` ({len(train_tokens):,} tokens), context {context}; "
            f"the student started as {init}. Loss: (1 - {alpha}) · T² · KL(teacher ‖ student) at T = "
            f"{temperature} + {alpha} · next-token cross-entropy."
        ]
        return Plan(
            small, Objective(windows.batch, objective.loss, evaluate, flops), Path(teacher), report, card
        )

    return run_stage("distill", out, record, train, overwrite, build)


def _student(
    teacher: Backbone,
    tok: Tokenizer,
    student: str | None,
    from_teacher_layers: int | None,
    model: ModelConfig | None,
) -> tuple[ModelConfig, Callable[[], Backbone], str]:
    """The student's config, how to make it (once the run is seeded) and what it started as."""
    if student is not None:
        check_same_vocabulary(Tokenizer.load(student), tok, student, "--student", "the teacher")
        given = load_model(student)
        _require_decoder(given.config, "--student", student)
        if given.config.vocab_size != teacher.config.vocab_size:
            raise TinyLMError(
                f"--student {student} has {given.config.vocab_size} output logits, the teacher "
                f"{teacher.config.vocab_size}: distillation compares the two distributions token by token"
            )
        return given.config, lambda: given, f"the checkpoint {student}"
    if from_teacher_layers is not None:
        cut = first_layers(teacher, from_teacher_layers)
        return (
            cut.config,
            lambda: cut,
            f"the teacher's first {from_teacher_layers} of {teacher.config.n_layer} layers",
        )
    config = replace(model or ModelConfig(), vocab_size=teacher.config.vocab_size)
    _require_decoder(config, "--model.family", config.family)
    return (
        config,
        lambda: build_model(config),
        f"a fresh {config.n_layer}-layer model (d_model {config.d_model})",
    )


def _require_decoder(config: ModelConfig, role: str, where: str) -> None:
    """Distillation compares next-token distributions at every position: both models must be decoder-only."""
    require_generative(config, "tinylm distill")
    if get_family(config.family).objective != "clm":
        raise TinyLMError(
            f"{role} {where} is a {config.family} model; tinylm distill needs decoder-only (causal) models"
        )


def _scores(when: str, scores: dict[str, float]) -> str:
    return (
        f"distill: {when}: KL to the teacher {scores['val_kl']:.4f} nats/token, agreement "
        f"{scores['val_agreement']:.1%}, {scores['val_bpb']:.4f} bits per byte "
        f"(teacher {scores['teacher_val_bpb']:.4f})"
    )
