"""Sampling: each knob changes exactly the logits it should; seeds make draws reproducible per row."""

import math
from dataclasses import replace

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.infer.sampling import (
    SamplingParams,
    apply_penalties,
    choose_tokens,
    filter_logits,
    token_distribution,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBS.log()


def kept(params: SamplingParams) -> list[int]:
    return torch.isfinite(filter_logits(LOGITS.clone(), [params])[0]).nonzero().flatten().tolist()


def test_truncation_keeps_the_right_tokens():
    assert kept(SamplingParams()) == [0, 1, 2, 3]
    assert kept(SamplingParams(top_k=2)) == [0, 1]
    assert kept(SamplingParams(top_p=0.7)) == [0, 1]  # 0.5 < 0.7, then 0.8 >= 0.7 -> cut after token 1
    assert kept(SamplingParams(top_p=0.5)) == [0]
    assert kept(SamplingParams(top_p=0.81)) == [0, 1, 2]
    assert kept(SamplingParams(min_p=0.2)) == [0, 1, 2]  # threshold 0.1
    assert kept(SamplingParams(min_p=0.5, top_k=3)) == [0, 1]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1e-40),  # below fp32's range: the division would give inf and NaN
        SamplingParams(temperature=5e-324),
        SamplingParams(top_p=1e-300),  # rounds to 0 in fp32: the top token must still stay
        SamplingParams(repetition_penalty=1e-300),  # a seen positive logit divided by it overflows
    ],
)
def test_extreme_settings_still_give_a_distribution(params):
    logits = torch.tensor([[2.0, 5.0, -1.0, 4.5]])
    seen = [torch.tensor([0])]
    probs = token_distribution(logits, [params], seen, seen)
    assert torch.isfinite(probs).all() and float(probs.sum()) == pytest.approx(1.0)
    assert int(probs.argmax()) == (0 if params.repetition_penalty != 1 else 1)


def test_rows_use_their_own_settings():
    logits = LOGITS.repeat(3, 1)
    out = filter_logits(logits, [SamplingParams(top_k=1), SamplingParams(), SamplingParams(temperature=2)])
    assert torch.isfinite(out).sum(-1).tolist() == [1, 4, 4]
    assert torch.allclose(out[2].softmax(-1), (LOGITS[0] / 2).softmax(-1))  # logits are shifted, not the law


def test_temperature_scales_the_distribution():
    flat = filter_logits(LOGITS.clone(), [SamplingParams(temperature=100)]).softmax(-1)
    assert torch.allclose(flat, torch.full((1, 4), 0.25), atol=0.01)
    sharp = filter_logits(LOGITS.clone(), [SamplingParams(temperature=0.5)]).softmax(-1)
    assert torch.allclose(sharp, PROBS**2 / (PROBS**2).sum())


def test_penalties():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen, generated = [torch.tensor([0, 1])], [torch.tensor([2, 2, 3])]
    rep = apply_penalties(logits.clone(), [SamplingParams(repetition_penalty=2.0)], seen, generated)
    assert rep.tolist() == [[1.0, -4.0, 1.0, 0.5]]  # positive halved, negative doubled, unseen untouched
    pf = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits.clone(), [pf], seen, generated)
    assert out.tolist() == [[2.0, -2.0, 1.0 - 0.5 - 0.5, 0.5 - 0.5 - 0.25]]


def test_greedy_ignores_generators_and_applies_penalties():
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    greedy = SamplingParams(temperature=0)
    assert choose_tokens(logits, [greedy], [None], [torch.tensor([])], [torch.tensor([])]).tolist() == [0]
    penalised = SamplingParams(temperature=0, presence_penalty=1.0)
    assert choose_tokens(logits, [penalised], [None], [torch.tensor([0])], [torch.tensor([0])]).tolist() == [
        1
    ]


def draw(params: SamplingParams, rows: int = 1, n: int = 200) -> list[int]:
    logits = LOGITS.repeat(rows, 1)
    gens = [params.make_generator() for _ in range(rows)]
    empty = [torch.empty(0, dtype=torch.long)] * rows
    return [choose_tokens(logits, [params] * rows, gens, empty, empty)[0].item() for _ in range(n)]


def test_seeded_draws_are_reproducible_and_independent_of_batch():
    a = draw(SamplingParams(seed=7))
    assert a == draw(SamplingParams(seed=7))
    assert a == draw(SamplingParams(seed=7), rows=3)  # row 0 unaffected by its neighbours
    assert a != draw(SamplingParams(seed=8))


def test_sampling_follows_the_distribution():
    counts = torch.bincount(torch.tensor(draw(SamplingParams(seed=0), n=2000)), minlength=4) / 2000
    assert torch.allclose(counts, PROBS[0], atol=0.05)
    assert set(draw(SamplingParams(seed=0, top_k=2))) == {0, 1}


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("min_p", 1.0),
        ("max_new_tokens", 0),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 3.0),
        ("frequency_penalty", -2.5),
        ("temperature", math.nan),
        ("top_logprobs", 21),
        ("stop", ["a", ""]),
        ("stop", "###"),
    ],
)
def test_out_of_range_values_name_the_field_when_built(field, value):
    with pytest.raises(TinyLMError, match=field):
        SamplingParams(**{field: value})
    with pytest.raises(TinyLMError, match=field):
        replace(SamplingParams(), **{field: value})
