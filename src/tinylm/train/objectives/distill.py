"""Knowledge distillation: a student learns a frozen teacher's next-token distributions (Hinton et al. 2015).

    loss = (1 − α) · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + α · cross-entropy(student, next token)

averaged over every position of a window. T² keeps the gradient's size independent of the temperature.
The held-out scores are what a draft model for speculative decoding is judged by: KL at T = 1 (the
distributions greedy and sampled decoding compare) and the agreement rate, how often the student's most
likely token is the teacher's, which is the share of greedy drafts the teacher accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def kl_per_token(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0):
    """KL(teacher ‖ student) at `temperature`, in nats, at each position: (..., V) logits -> (...)."""
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1)


@dataclass
class Distillation:
    """The distillation objective against `teacher` (a frozen causal model, read in eval mode)."""

    teacher: nn.Module
    temperature: float = 1.0
    alpha: float = 0.0
    """Weight of the ordinary next-token cross-entropy; the KL term gets 1 − alpha."""

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits over windows `x`, computed without autograd, as a tensor autograd may keep."""
        with torch.inference_mode():
            logits = self.teacher(x)
        return logits.to(torch.float32, copy=True)  # an inference tensor cannot be saved for backward

    def terms(self, teacher: torch.Tensor, student: torch.Tensor, y: torch.Tensor):
        """(loss, KL term at the temperature, cross-entropy), each a mean over positions, from both logits."""
        kl = kl_per_token(teacher, student, self.temperature).mean() * self.temperature**2
        ce = F.cross_entropy(student.float().flatten(0, 1), y.flatten())
        return (kl if self.alpha == 0 else (1 - self.alpha) * kl + self.alpha * ce), kl, ce

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        """The loss of a batch of windows (x, y), with its KL and cross-entropy terms as metrics."""
        x, y = batch
        loss, kl, ce = self.terms(self.teacher_logits(x), model(x), y)
        return loss, {"kl": float(kl.detach()), "ce": float(ce.detach())}

    @torch.no_grad()
    def compare(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device) -> dict:
        """Sums over every position of `batches`: the objective, KL at T = 1, agreements of the two argmaxes
        and both models' next-token NLL, with the number of positions ("positions")."""
        sums = dict.fromkeys(("loss", "kl", "agree", "nll", "teacher_nll"), 0.0)
        positions = 0
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            teacher, student = self.teacher_logits(x), model(x).float()
            n = y.numel()
            sums["loss"] += float(self.terms(teacher, student, y)[0]) * n
            sums["kl"] += float(kl_per_token(teacher, student).sum())
            sums["agree"] += float((teacher.argmax(-1) == student.argmax(-1)).sum())
            sums["nll"] += float(F.cross_entropy(student.flatten(0, 1), y.flatten(), reduction="sum"))
            sums["teacher_nll"] += float(F.cross_entropy(teacher.flatten(0, 1), y.flatten(), reduction="sum"))
            positions += n
        return {**sums, "positions": positions}


def held_out_scores(sums: dict) -> dict[str, float]:
    """Means per position of `Distillation.compare`'s sums: val_loss (the objective), val_kl, val_agreement."""
    n = max(1, sums["positions"])
    return {"val_loss": sums["loss"] / n, "val_kl": sums["kl"] / n, "val_agreement": sums["agree"] / n}
