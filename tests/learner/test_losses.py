"""Hand-derived checks of learner.losses: every aggregation mode, clip setting, KL kind, advantage scale."""

from __future__ import annotations

import math

import pytest
import torch

from learner import losses
from learner.losses import (
    aggregate,
    get_advantage_estimator,
    get_policy_loss,
    group_advantages,
    gspo_loss,
    kl_penalty,
    overlong_penalty,
    policy_loss,
    rloo_advantages,
)

TOL = {"rtol": 0, "atol": 1e-6}

# Ratios r = exp(logprobs - old_logprobs), old = 0. Sequence 0 has A = +1, sequence 1 has A = -2,
# and the last token of sequence 1 is masked out (its ratio 2.0 would otherwise change every number).
RATIOS = torch.tensor([[1.5, 0.5, 1.0], [1.1, 0.7, 2.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
ADV = torch.tensor([1.0, -2.0], dtype=torch.float64)


def _loss(**kw):
    return policy_loss(RATIOS.log(), torch.zeros_like(RATIOS), ADV, MASK, **kw)


# Per-token losses with clip 0.2 / 0.2:
#   seq 0 (A=+1): r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped high); r=0.5 -> max(-0.5, -0.8) = -0.5; r=1 -> -1.0
#   seq 1 (A=-2): r=1.1 -> max(2.2, 2.2) = 2.2; r=0.7 -> max(1.4, 1.6) = 1.6 (clipped low)
# masked sums: seq 0 = -2.7, seq 1 = 3.8, total 1.1 over 5 tokens.
@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("token-mean", 1.1 / 5),
        ("seq-mean-token-mean", (-2.7 / 3 + 3.8 / 2) / 2),
        ("seq-mean-token-sum", (-2.7 + 3.8) / 2),
        ("seq-mean-token-sum-norm", 1.1 / 3),
    ],
)
def test_policy_loss_every_aggregation(agg, expected):
    loss, _ = _loss(agg=agg)
    torch.testing.assert_close(loss.item(), expected, **TOL)


def test_policy_loss_symmetric_clip_metrics():
    _, m = _loss()
    assert m["clip_frac_high"].item() == pytest.approx(1 / 5, abs=1e-9)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 5, abs=1e-9)
    assert m["dual_clip_frac"].item() == 0.0
    expected_kl = -(math.log(1.5) + math.log(0.5) + 0.0 + math.log(1.1) + math.log(0.7)) / 5
    assert m["approx_kl"].item() == pytest.approx(expected_kl, abs=1e-9)


def test_policy_loss_clip_higher():
    # DAPO clip-higher 0.28: the r=1.5 token is clipped at 1.28 instead of 1.2
    loss, m = _loss(clip_high=0.28)
    torch.testing.assert_close(loss.item(), (-1.28 - 0.5 - 1.0 + 2.2 + 1.6) / 5, **TOL)
    assert m["clip_frac_high"].item() == pytest.approx(0.2, abs=1e-9)
    # a clip_high above 0.5 leaves r=1.5 alone; a clip_low of 0.4 leaves r=0.7 alone (A<0 -> 2*0.7 = 1.4)
    loss, m = _loss(clip_low=0.4, clip_high=0.6)
    torch.testing.assert_close(loss.item(), (-1.5 - 0.5 - 1.0 + 2.2 + 1.4) / 5, **TOL)
    assert m["clip_frac_high"].item() == 0.0
    assert m["clip_frac_low"].item() == 0.0


def test_policy_loss_gradient_zero_on_clipped_tokens():
    logp = RATIOS.log().clone().requires_grad_(True)
    loss, _ = policy_loss(logp, torch.zeros_like(logp), ADV, MASK)
    loss.backward()
    # d(-A r)/d logp = -A r, divided by the 5 tokens; clipped and masked tokens get 0
    expected = torch.tensor([[0.0, -0.5, -1.0], [2.2, 0.0, 0.0]], dtype=torch.float64) / 5
    torch.testing.assert_close(logp.grad, expected, **TOL)


def test_dual_clip_bounds_negative_advantages():
    ratios = torch.tensor([[5.0, 2.0, 0.5], [5.0, 1.0, 1.0]], dtype=torch.float64)
    adv = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    mask = torch.ones_like(ratios)
    logp = ratios.log().requires_grad_(True)
    loss, m = policy_loss(logp, torch.zeros_like(logp), adv, mask, dual_clip=3.0)
    # A=-1: r=5 -> max(5, 1.2) = 5 -> min(5, 3) = 3 (dual clip); r=2 -> 2 (< 3); r=0.5 -> max(0.5, 0.8) = 0.8
    # A=+1: r=5 -> max(-5, -1.2) = -1.2 (dual clip never applies to A > 0); r=1 -> -1, -1
    torch.testing.assert_close(loss.item(), (3 + 2 + 0.8 - 1.2 - 1 - 1) / 6, **TOL)
    assert m["dual_clip_frac"].item() == pytest.approx(1 / 6, abs=1e-9)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 6, abs=1e-9)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 6, abs=1e-9)
    loss.backward()
    expected = torch.tensor([[0.0, 2.0, 0.0], [0.0, -1.0, -1.0]], dtype=torch.float64) / 6
    torch.testing.assert_close(logp.grad, expected, **TOL)
    with pytest.raises(ValueError, match=r"dual_clip must be > 1\.0"):
        policy_loss(logp, logp, adv, mask, dual_clip=1.0)


def test_log_ratio_is_clamped():
    logp = torch.tensor([[30.0]], dtype=torch.float64)
    loss, _ = policy_loss(
        logp,
        torch.zeros_like(logp),
        torch.tensor([-1.0], dtype=torch.float64),
        torch.ones_like(logp),
        clip_low=0.2,
        clip_high=0.2,
    )
    torch.testing.assert_close(loss.item(), math.exp(20.0), rtol=1e-12, atol=0)


def test_per_token_advantages_accepted_and_shape_checked():
    adv_tok = ADV.unsqueeze(-1).expand(2, 3).clone()
    loss_tok, _ = policy_loss(RATIOS.log(), torch.zeros_like(RATIOS), adv_tok, MASK)
    torch.testing.assert_close(loss_tok.item(), 1.1 / 5, **TOL)
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(RATIOS.log(), torch.zeros_like(RATIOS), torch.ones(2, 2), MASK)


@pytest.mark.parametrize("agg", losses.AGG_MODES)
def test_micro_batches_add_up_with_global_denominators(agg):
    g = torch.Generator().manual_seed(0)
    logp = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    old = torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=g) > 0.3).double()
    mask[:, 0] = 1
    kw = {"agg": agg, "norm_length": 5.0}
    full, full_m = policy_loss(logp, old, adv, mask, **kw)
    (full_grad,) = torch.autograd.grad(full, logp)
    total = torch.zeros((), dtype=torch.float64)
    parts_m = dict.fromkeys(full_m, 0.0)
    for part in (slice(0, 1), slice(1, 4), slice(4, 6)):
        loss, m = policy_loss(
            logp[part], old[part], adv[part], mask[part], global_tokens=mask.sum(), global_seqs=6.0, **kw
        )
        total = total + loss
        for k in parts_m:
            parts_m[k] += m[k].item()
    (split_grad,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(total, full, rtol=0, atol=1e-12)
    torch.testing.assert_close(split_grad, full_grad, rtol=0, atol=1e-12)
    for k, v in parts_m.items():
        assert v == pytest.approx(full_m[k].item(), abs=1e-12), k


def test_aggregate_counts_only_sequences_with_tokens():
    values = torch.tensor([[2.0, 4.0], [9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)
    assert aggregate(values, mask, "seq-mean-token-sum").item() == pytest.approx(6.0)
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(3.0)
    assert aggregate(values, mask, "seq-mean-token-sum-norm").item() == pytest.approx(3.0)
    assert aggregate(values, mask, "seq-mean-token-sum-norm", norm_length=4).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="token-mean, seq-mean-token-mean"):
        aggregate(values, mask, "sum")


def test_kl_estimators():
    logp = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-0.5, -0.5]], dtype=torch.float64)
    # d = ref - logp = [-0.5, 0.5]
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), torch.tensor([[0.5, -0.5]], dtype=torch.float64))
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), torch.tensor([[0.125, 0.125]], dtype=torch.float64))
    k3 = torch.tensor([[math.exp(-0.5) - 1 + 0.5, math.exp(0.5) - 1 - 0.5]], dtype=torch.float64)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), k3, rtol=0, atol=1e-12)
    # far off-policy tokens: k3 saturates at 10 instead of exp(30)
    far = kl_penalty(torch.tensor([0.0]), torch.tensor([30.0]), "k3")
    assert far.item() == 10.0
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(logp, ref, "k4")


def test_group_advantages_both_scales():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    groups = torch.tensor([7, 7, 7, 3, 3, 9])
    # group 7: mean 1/3, unbiased std sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3); group 3: std 0 -> 0;
    # group 9 has one sample: mean 0, std 1
    s = math.sqrt(1 / 3) + 1e-6
    expected = torch.tensor([(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 0.0, 0.0, 0.5 / (1 + 1e-6)])
    torch.testing.assert_close(group_advantages(rewards, groups), expected, **TOL)
    expected_none = torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.5])
    torch.testing.assert_close(group_advantages(rewards, groups, scale="none"), expected_none, **TOL)
    torch.testing.assert_close(get_advantage_estimator("dr_grpo")(rewards, groups), expected_none, **TOL)
    torch.testing.assert_close(get_advantage_estimator("grpo")(rewards, groups), expected, **TOL)
    with pytest.raises(ValueError, match="group, none"):
        group_advantages(rewards, groups, scale="batch")


def test_rloo_leave_one_out():
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1])
    torch.testing.assert_close(rloo_advantages(rewards, groups), torch.tensor([1.0, -0.5, -0.5, 2.0]), **TOL)


def test_overlong_penalty():
    lengths = torch.tensor([50, 80, 90, 100, 120])
    out = overlong_penalty(lengths, max_len=100, buffer=20, factor=1.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]), **TOL)
    out = overlong_penalty(lengths, max_len=100, buffer=20, factor=0.5)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.25, -0.5, -0.5]), **TOL)
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, max_len=10, buffer=20)


def test_gspo_sequence_ratio():
    logp = torch.tensor([[0.2, -0.1]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(logp)
    mask = torch.ones_like(logp)
    s = math.exp(0.05)  # geometric mean ratio of the sequence
    loss, m = gspo_loss(logp, old, torch.tensor([1.0], dtype=torch.float64), mask)
    torch.testing.assert_close(loss.item(), -(1 + 4e-4), **TOL)  # clipped at 1 + clip_high
    assert m["clip_frac_high"].item() == 1.0
    loss, _ = gspo_loss(logp, old, torch.tensor([-1.0], dtype=torch.float64), mask)
    torch.testing.assert_close(loss.item(), s, **TOL)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[s / 2, s / 2]], dtype=torch.float64), **TOL)


def test_registries_list_valid_names():
    assert get_policy_loss("ppo_clip") is policy_loss
    with pytest.raises(KeyError, match="gspo, ppo_clip"):
        get_policy_loss("ppo")
    with pytest.raises(KeyError, match="dr_grpo, grpo, rloo"):
        get_advantage_estimator("gae")
