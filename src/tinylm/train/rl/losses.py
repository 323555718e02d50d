"""Per-token quantities PPO and GRPO share: entropy, masked statistics, KL, the clipped surrogate."""

from __future__ import annotations

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position but the last (B, T-1)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (the mean is kept if not `shift_mean`); 0 outside the mask."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from a sample of π: r − log r − 1 with r = π_ref/π (Schulman's k3),
    unbiased, always ≥ 0, and lower-variance than log(π/π_ref)."""
    d = ref_logp - logp
    return d.exp() - d - 1


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped policy loss, mean over action tokens, and the share of tokens where clipping binds.

    loss = mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))), ρ = exp(log π − log π_old); `advantages` broadcasts
    (per token for PPO, per sequence for GRPO)."""
    ratio = (logp - old_logp).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)
