"""PPO, DPO, GRPO and reward-model losses, GAE and KL estimates against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tinylm.data.prompts import pack
from tinylm.infer.scoring import token_logprobs
from tinylm.train.objectives.pairs import bradley_terry_loss, dpo_loss
from tinylm.train.rl.grpo import group_advantages
from tinylm.train.rl.losses import clipped_surrogate, k3_kl, masked_whiten
from tinylm.train.rl.ppo import adapt_kl_coef, gae, value_loss


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_hand_computed():
    rewards, values, mask = t([0.0, 0.0, 1.0]), t([0.5, 0.5, 0.5]), t([1, 1, 1])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # δ = (0, 0, 0.5); with λ = γ = 1 every advantage is the final return minus its value.
    assert adv.tolist() == [[0.5, 0.5, 0.5]] and ret.tolist() == [[1.0, 1.0, 1.0]]
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert adv.tolist() == [[0.125, 0.25, 0.5]]
    adv, _ = gae(t([0.0, 1.0]), t([0.0, 0.0]), t([1, 1]), gamma=0.5, lam=1.0)
    assert adv.tolist() == [[0.5, 1.0]]  # the reward one step later counts γ = 0.5


def test_gae_ignores_prompt_and_padding_positions():
    # Row: [prompt, action, action, pad]; the pad's value must not leak into the last action.
    rewards, values, mask = t([9.0, 0.0, 2.0, 9.0]), t([9.0, 1.0, 1.0, 9.0]), t([0, 1, 1, 0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv.tolist() == [[0.0, 1.0, 1.0, 0.0]] and ret.tolist() == [[0.0, 2.0, 2.0, 0.0]]


def test_clipped_surrogate_takes_the_pessimistic_side():
    logp, old = t([math.log(1.5), math.log(1.5)]), t([0.0, 0.0])
    adv = t([1.0, -1.0])
    loss, clip_frac = clipped_surrogate(logp, old, adv, torch.ones(1, 2), clip=0.2)
    # A > 0: ratio 1.5 is clipped to 1.2 -> -1.2; A < 0: the unclipped 1.5 is worse -> 1.5.
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2) and clip_frac.item() == 0.5
    loss, clip_frac = clipped_surrogate(logp, logp, adv, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(0.0) and clip_frac.item() == 0.0


def test_clipped_surrogate_gradient_is_zero_where_clipped():
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 2), t([1.0, 1.0]), torch.ones(1, 2), clip=0.2)
    loss.backward()
    # d/dlogp of −A·ρ/2 is −ρ/2 on the unclipped token; the clipped one gets nothing.
    assert logp.grad.tolist()[0] == pytest.approx([0.0, -1.1 / 2])


def test_value_loss_clips_around_the_old_value():
    loss = value_loss(t([1.0]), t([0.5]), t([2.0]), t([1]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.7 - 2.0) ** 2)  # the clipped estimate 0.7 is worse


def test_k3_kl_hand_computed_and_zero_at_equality():
    kl = k3_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert kl.item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert k3_kl(torch.tensor([-1.3]), torch.tensor([-1.3])).item() == 0.0


def test_dpo_loss_and_implicit_rewards():
    loss, m = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert m["chosen_reward"] == 0.5 and m["rejected_reward"] == -0.5
    assert m["reward_margin"] == 1.0 and m["reward_accuracy"] == 1.0
    loss, _ = dpo_loss(t(-2.0), t(-2.0), t(-2.0), t(-2.0), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))  # the reference itself: no preference yet


def test_bradley_terry_loss():
    loss, m = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert loss.item() == pytest.approx((softplus(-1) + softplus(1)) / 2)
    assert m == {"accuracy": 0.5, "margin": 0.0}


def test_group_advantages_standardise_within_groups():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), group_size=4)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    up, down = 0.5 / (std + 1e-4), -0.5 / (std + 1e-4)
    assert adv[:4].tolist() == pytest.approx([up, down, down, up])
    assert adv[4:].tolist() == [0.0] * 4  # all equal: nothing to learn


def test_adaptive_kl_coefficient():
    assert adapt_kl_coef(0.1, kl=12.0, target=6.0, n=100, horizon=1000) == pytest.approx(0.102)
    assert adapt_kl_coef(0.1, kl=6.6, target=6.0, n=100, horizon=1000) == pytest.approx(0.101)
    assert adapt_kl_coef(0.1, kl=0.0, target=6.0, n=100, horizon=1000) == pytest.approx(0.098)


def test_masked_whiten_uses_only_masked_entries():
    x, mask = t([1.0, 3.0, 100.0]), t([1, 1, 0])
    assert masked_whiten(x, mask).tolist()[0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-4)
    assert masked_whiten(x, mask, shift_mean=False).tolist()[0] == pytest.approx([1.0, 3.0, 0.0], abs=1e-4)


def test_pack_marks_the_positions_that_predict_completion_tokens():
    batch = pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert batch["action_mask"].tolist() == [[False, False, True, True], [True, True, True, False]]
    logits = torch.zeros(2, 5, 10)
    logits[0, 2, 1] = 5.0  # position 2 predicts token 1
    logp = token_logprobs(logits, batch["input_ids"])
    assert logp[0, 2].item() == pytest.approx(5.0 - math.log(math.exp(5.0) + 9))
    assert logp[1, 0].item() == pytest.approx(-math.log(10))
