"""Hand-derived checks of the rollout-training mismatch correction in learner.losses: the weights of every mode,
their effect on the policy loss, and the mismatch metrics."""

from __future__ import annotations

import math

import pytest
import torch

from learner.losses import ROLLOUT_CORRECTIONS, gspo_loss, mismatch_metrics, policy_loss, quantiles, rollout_weights

TOL = {"rtol": 0, "atol": 1e-6}

# Token ratios rho = proximal / behaviour. Sequence 0: rho = 3, 1, 0.5 (product 1.5, geometric mean 1.5 ** (1/3)
# = 1.1447). Sequence 1: rho = 1.002, 1.003 and a masked position whose ratio e^5 must change nothing (product
# 1.005006, geometric mean 1.002500).
PROXIMAL = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.5, -0.3]], dtype=torch.float64)
RHO = torch.tensor([[3.0, 1.0, 0.5], [1.002, 1.003, math.exp(5.0)]], dtype=torch.float64)
BEHAVIOUR = PROXIMAL - RHO.log()
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)


def _weights(mode, **kw):
    return rollout_weights(PROXIMAL, BEHAVIOUR, MASK, mode=mode, **kw).double()


@pytest.mark.parametrize(
    ("mode", "kw", "expected"),
    [
        ("none", {}, [[1, 1, 1], [1, 1, 0]]),
        ("tis", {"tis_cap": 2.0}, [[2.0, 1.0, 0.5], [1.002, 1.003, 0]]),
        ("tis", {"tis_cap": 1.001}, [[1.001, 1.0, 0.5], [1.001, 1.001, 0]]),
        # product of sequence 0 = 1.5 is inside [0.5, 2]: every token weighs 1.5; sequence 1 weighs 1.002 * 1.003
        ("mis", {"mis_bounds": (0.5, 2.0)}, [[1.5, 1.5, 1.5], [1.005006, 1.005006, 0]]),
        ("mis", {"mis_bounds": (0.5, 1.2)}, [[0, 0, 0], [1.005006, 1.005006, 0]]),
        ("mis", {"mis_bounds": (1.01, 2.0)}, [[1.5, 1.5, 1.5], [0, 0, 0]]),
        ("geo_mask", {"geo_mask_bounds": (0.99, 1.01)}, [[0, 0, 0], [1, 1, 0]]),
        ("geo_mask", {"geo_mask_bounds": (0.99, 1.15)}, [[1, 1, 1], [1, 1, 0]]),
        ("geo_mask", {"geo_mask_bounds": (1.003, 1.2)}, [[1, 1, 1], [0, 0, 0]]),
        ("decoupled", {"decoupled_cap": 2.5}, [[0, 1.0, 0.5], [1.002, 1.003, 0]]),
        ("decoupled", {"decoupled_cap": 3.01}, [[3.0, 1.0, 0.5], [1.002, 1.003, 0]]),
        ("decoupled", {"decoupled_cap": None}, [[3.0, 1.0, 0.5], [1.002, 1.003, 0]]),
    ],
)
def test_weights_of_every_mode(mode, kw, expected):
    torch.testing.assert_close(_weights(mode, **kw), torch.tensor(expected, dtype=torch.float64), **TOL)


def test_weights_are_detached_and_log_ratios_clamped():
    proximal = PROXIMAL.clone().requires_grad_(True)
    w = rollout_weights(proximal, BEHAVIOUR, MASK, mode="decoupled", decoupled_cap=None)
    assert not w.requires_grad
    # a ratio of e^30 counts as e^20 (the loss's clamp), so one broken token cannot overflow a weight
    huge = rollout_weights(
        torch.zeros(1, 1), torch.full((1, 1), -30.0), torch.ones(1, 1), mode="decoupled", decoupled_cap=None
    )
    assert huge.item() == pytest.approx(math.exp(20.0), rel=1e-6)
    # a sequence whose product of ratios overflows float32 is compared in log space and dropped, not inf * 0 = nan
    long = rollout_weights(torch.zeros(1, 50), torch.full((1, 50), -10.0), torch.ones(1, 50), mode="mis")
    assert torch.equal(long, torch.zeros(1, 50))


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="none, tis, mis, geo_mask, decoupled"):
        _weights("icepop")
    assert ROLLOUT_CORRECTIONS == ("none", "tis", "mis", "geo_mask", "decoupled")


# Policy loss with the weights, on-policy (logprobs == proximal, ratio 1, no clipping), A = +1 and -1, token-mean:
# per token -A * w. TIS weights: seq 0 -(2 + 1 + 0.5) = -3.5, seq 1 +(1.002 + 1.003) = 2.005; (-3.5 + 2.005) / 5.
def test_tis_weights_scale_each_tokens_policy_gradient():
    logprobs = PROXIMAL.clone().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = _weights("tis", tis_cap=2.0)
    loss, metrics = policy_loss(logprobs, PROXIMAL, adv, MASK, rollout_weights=w)
    assert loss.item() == pytest.approx((-3.5 + 2.005) / 5, abs=1e-12)
    loss.backward()
    # d(-A * w * exp(lp - old)) / d lp = -A * w at ratio 1, over the 5 tokens
    torch.testing.assert_close(logprobs.grad, -adv[:, None] * w / 5, **TOL)
    assert metrics["clip_frac_high"].item() == 0.0
    unweighted, _ = policy_loss(PROXIMAL, PROXIMAL, adv, MASK)
    assert unweighted.item() == pytest.approx((-3 + 2) / 5, abs=1e-12)


def test_dropped_tokens_keep_their_place_in_the_denominator():
    """A sequence the mask drops contributes 0 to the sum and still counts in token-mean's N (AReaL's choice)."""
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = _weights("geo_mask", geo_mask_bounds=(0.99, 1.01))  # drops sequence 0
    loss, _ = policy_loss(PROXIMAL, PROXIMAL, adv, MASK, rollout_weights=w)
    assert loss.item() == pytest.approx(2.0 / 5, abs=1e-12)
    seq_loss, _ = policy_loss(PROXIMAL, PROXIMAL, adv, MASK, rollout_weights=w, agg="seq-mean-token-mean")
    assert seq_loss.item() == pytest.approx((0.0 + 1.0) / 2, abs=1e-12)


def test_decoupled_clip_is_centred_on_the_proximal_policy():
    """Decoupled PPO: ratio pi / pi_prox is clipped; the behaviour weight pi_prox / mu multiplies the result.

    Token with A = +1, pi / pi_prox = 1.5 (clipped to 1.2, clip 0.2), pi_prox / mu = 0.5: loss -1.2 * 0.5 = -0.6.
    Clipping against the behaviour (pi / mu = 0.75, inside the clip) would give -0.75 instead.
    """
    proximal = torch.tensor([[-1.0]], dtype=torch.float64)
    current = proximal + math.log(1.5)
    behaviour = proximal - math.log(0.5)
    mask = torch.ones(1, 1, dtype=torch.float64)
    w = rollout_weights(proximal, behaviour, mask, mode="decoupled")
    loss, metrics = policy_loss(current, proximal, torch.tensor([1.0]), mask, rollout_weights=w)
    assert loss.item() == pytest.approx(-0.6, abs=1e-12)
    assert metrics["clip_frac_high"].item() == 1.0


def test_gspo_passes_the_weights_on():
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = _weights("tis", tis_cap=2.0)
    loss, _ = gspo_loss(PROXIMAL, PROXIMAL, adv, MASK, rollout_weights=w, agg="token-mean")
    assert loss.item() == pytest.approx((-3.5 + 2.005) / 5, abs=1e-12)


# rho = 0.5, 1, 2, 4 with weights 0.5, 1, 2, 0:
#   k3 = mean(rho - 1 - ln rho) = (0.193147 + 0 + 0.306853 + 1.613706) / 4 = 0.528426
#   k1 = mean(-ln rho) = -(−0.693147 + 0 + 0.693147 + 1.386294) / 4 = -0.346574; mean |ln rho| = 0.693147
#   quantiles (linear between order statistics of 0.5, 1, 2, 4): p05 at 0.15 -> 0.575, p50 at 1.5 -> 1.5,
#   p95 at 2.85 -> 3.7
def test_mismatch_metrics_by_hand():
    rho = torch.tensor([0.5, 1.0, 2.0, 4.0])
    got = mismatch_metrics(rho.log(), torch.tensor([0.5, 1.0, 2.0, 0.0]))
    expected = {
        "mismatch_kl": 0.528426,
        "mismatch_kl_k1": -0.346574,
        "mismatch_log_ratio_abs": 0.693147,
        "mismatch_ratio_p05": 0.575,
        "mismatch_ratio_p50": 1.5,
        "mismatch_ratio_p95": 3.7,
        "mismatch_ratio_min": 0.5,
        "mismatch_ratio_max": 4.0,
        "mismatch_weight_mean": 0.875,
        "mismatch_masked_frac": 0.25,
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert set(mismatch_metrics(torch.zeros(0), torch.zeros(0)).values()) == {0.0}


def test_quantiles_match_numpy_linear_rule():
    values = torch.tensor([7.0, 1.0, 3.0, 5.0, 2.0])  # sorted 1, 2, 3, 5, 7
    assert quantiles(values, (0.0, 0.1, 0.5, 0.9, 1.0)) == pytest.approx([1.0, 1.4, 3.0, 6.2, 7.0])
    assert quantiles(torch.tensor([4.0]), (0.05, 0.95)) == [4.0, 4.0]
