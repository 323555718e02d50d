"""GRPO's loss on a fixed-logits model against values computed by hand: only completion tokens count (prompt
and padding positions carry deliberately absurd log-probabilities), the advantage sign, and the β·KL term."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tinylm.data.prompts import pack
from tinylm.train.rl.grpo import GRPOConfig, grpo_loss


class Uniform(nn.Module):
    """A 'model' whose next-token distribution is uniform over V tokens everywhere: log π = −log V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.bias = vocab, nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        return torch.zeros(*input_ids.shape, self.vocab) + self.bias


def batch_for(advantages: list[float], ref_shift: float) -> dict[str, torch.Tensor]:
    batch = pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)  # 2 and 3 completion tokens, 1 pad
    logp = torch.full(batch["action_mask"].shape, -math.log(10))
    junk = ~batch["action_mask"]  # prompt and pad positions: values that would dominate if they leaked
    old = torch.where(junk, torch.tensor(50.0), logp)
    ref = torch.where(junk, torch.tensor(-50.0), logp + ref_shift)
    return {
        **batch,
        "old_logprobs": old,
        "ref_logprobs": ref,
        "advantages": torch.tensor(advantages),
        "reward": torch.tensor([1.0, 0.0]),
        "informative": torch.tensor([1.0, 1.0]),
    }


def test_grpo_loss_hand_computed_over_completion_tokens_only() -> None:
    model, config = Uniform(10), GRPOConfig(beta=0.5)
    loss, m = grpo_loss(model, batch_for([2.0, -1.0], ref_shift=0.0), config)
    # ratio 1 everywhere: policy loss = mean over the 5 completion tokens of −A = (−2·2 + 1·3) / 5.
    assert m["policy_loss"] == pytest.approx(-0.2) and m["kl"] == pytest.approx(0.0)
    assert loss.item() == pytest.approx(-0.2) and m["clip_frac"] == 0.0


def test_grpo_kl_term_is_k3_to_the_reference_weighted_by_beta() -> None:
    model, config = Uniform(10), GRPOConfig(beta=0.5)
    d = 0.3  # log π_ref − log π on every completion token
    loss, m = grpo_loss(model, batch_for([0.0, 0.0], ref_shift=d), config)
    kl = math.exp(d) - d - 1
    assert m["kl"] == pytest.approx(kl) and loss.item() == pytest.approx(0.5 * kl)


def test_summary_shows_the_starting_model_beside_the_trained_one(tmp_path) -> None:
    from tinylm.io import write_json
    from tinylm.train.report import summarize_run as summarize

    results = {"step": 40, "train_seconds": 61.2, "heldout_reward": 0.25, "start_heldout_reward": 0.125}
    write_json(tmp_path / "results.json", results)
    text = summarize(str(tmp_path))
    assert "held-out reward 0.2500" in text and "same prompts and seed: reward 0.1250" in text
