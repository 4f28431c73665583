"""Comparison modes, rule names and the reward formula, against hand-derived values."""

from __future__ import annotations

import pytest

from solvers import RewardConfig
from solvers.reward import correct_under, matches, parse_rule, reward_of, rule_key

RELATIVE = RewardConfig()
ORLM = RewardConfig(comparison="orlm")
EVOM = RewardConfig(comparison="evom", tolerance=0.05)
EVOM_STRICT = RewardConfig(comparison="evom", tolerance=1e-4)


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        (21.0, 21.0, True),
        (21.0 + 2.1e-5, 21.0, True),  # 2.1e-5 / 22 = 9.5e-7 < 1e-6
        (21.0 + 2.3e-5, 21.0, False),  # 2.3e-5 / 22 = 1.05e-6
        (0.0, 0.0, True),
        (9e-7, 0.0, True),  # |gt| + 1 keeps a zero answer comparable
        (1.1e-6, 0.0, False),
        (-5.0, 5.0, False),
        (float("nan"), 1.0, False),
        (float("inf"), 1.0, False),
        (float("-inf"), 1.0, False),
        (1e-6, 0.0, False),  # exactly on the bound: SIRL's rule is strict (<)
        (-21.0 - 2.1e-5, -21.0, True),  # a negative answer: |gt| + 1 = 22 as for +21
    ],
)
def test_relative_comparison(pred: float, answer: float, expected: bool) -> None:
    assert matches(pred, answer, RELATIVE) is expected


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        (104.6, 100.0, True),  # round(104.6) = 105: 5 / 100 = 0.05 <= 0.05
        (105.6, 100.0, False),  # 106: 0.06
        (0.4, 0.0, True),  # both round to 0
        (0.6, 0.0, False),  # 1 vs 0: |1| > 0.05
        (2.6667, 3.0, True),  # rounds to 3
        (2.4, 3.0, False),  # rounds to 2: 1/3
    ],
)
def test_orlm_comparison(pred: float, answer: float, expected: bool) -> None:
    assert matches(pred, answer, ORLM) is expected


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        (105.0, 100.0, True),  # 5 / 100 = 0.05: on the bound, and EVOM's rule is <=
        (95.0, 100.0, True),
        (105.5, 100.0, False),  # 0.055
        (94.9, 100.0, False),
        (-105.0, -100.0, True),  # a negative answer: max(|gt|, delta) = 100
        (-95.0, -100.0, True),
        (105.0, -100.0, False),  # the right size with the wrong sign: 205 / 100
        (0.0, 0.0, True),
        (5e-8, 0.0, True),  # gt = 0: max(0, delta = 1e-6) -> 5e-8 / 1e-6 = 0.05 <= 0.05
        (1e-7, 0.0, False),  # 0.1
        (0.01, 0.2, False),  # 0.19 / 0.2 = 0.95: a small answer is still compared relatively
        (float("nan"), 0.0, False),
        (float("inf"), 100.0, False),
        (float("-inf"), -100.0, False),
    ],
)
def test_evom_comparison(pred: float, answer: float, expected: bool) -> None:
    assert matches(pred, answer, EVOM) is expected


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        (10001.0, 10000.0, True),  # 1 / 10000 = 1e-4: on the bound
        (9999.0, 10000.0, True),
        (10002.0, 10000.0, False),  # 2e-4
        (100.5, 100.0, False),  # 5e-3
        (8.0, 8.0, True),
    ],
)
def test_evom_strict_comparison(pred: float, answer: float, expected: bool) -> None:
    assert matches(pred, answer, EVOM_STRICT) is expected


def test_evom_delta_bounds_a_small_answer() -> None:
    loose = RewardConfig(comparison="evom", tolerance=0.05, delta=1.0)
    assert matches(0.05, 0.0, loose) and not matches(0.06, 0.0, loose)  # |pred| / 1 against 0.05
    assert matches(0.24, 0.2, loose)  # 0.04 / max(0.2, 1) = 0.04
    assert not matches(0.24, 0.2, EVOM)  # 0.04 / 0.2 = 0.2


def test_the_same_outcome_under_several_rules() -> None:
    # 100.5 for 100: 0.005 relative. EVOM 5% accepts, EVOM 1e-4 and SIRL's 1e-6 do not, ORLM rounds 100.5 to 100
    assert [correct_under("wrong", 100.5, 100.0, rule) for rule in (EVOM, EVOM_STRICT, RELATIVE, ORLM)] == [
        True,
        False,
        False,
        True,
    ]
    assert correct_under("correct", 100.0, 100.0, EVOM_STRICT)
    for rule in (EVOM, RELATIVE, ORLM):  # verdicts that do not compare an objective are the same under every rule
        assert correct_under("correct", None, None, rule)  # proved no optimum, as expected
        assert not correct_under("wrong", 100.0, None, rule)  # an optimum for a problem without one
        assert not correct_under("infeasible", None, 100.0, rule)
        assert not correct_under("no_solve", 100.0, 100.0, rule)  # stopped at a limit with the right incumbent
        assert not correct_under("error", None, 100.0, rule)


@pytest.mark.parametrize(
    ("text", "config", "key"),
    [
        ("relative:1e-6", RewardConfig(), "relative:1e-06"),
        ("evom:0.05", EVOM, "evom:0.05"),
        ("evom:1e-4", EVOM_STRICT, "evom:0.0001"),
        ("evom:0.05:delta=1", RewardConfig(comparison="evom", tolerance=0.05, delta=1.0), "evom:0.05:delta=1.0"),
        ("orlm", ORLM, "orlm"),
        ("orlm:0.1", RewardConfig(comparison="orlm", orlm_tolerance=0.1), "orlm:0.1"),
    ],
)
def test_rule_names_read_back(text: str, config: RewardConfig, key: str) -> None:
    assert parse_rule(text) == config
    assert rule_key(config) == key
    assert parse_rule(key) == config


def test_a_parsed_rule_keeps_the_other_fields_of_its_base() -> None:
    base = RewardConfig(accept_feasible=True, min_variables=2)
    rule = parse_rule("evom:0.05", base)
    assert (rule.comparison, rule.tolerance, rule.accept_feasible, rule.min_variables) == ("evom", 0.05, True, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("absolute:1e-6", "unknown comparison 'absolute'"),
        ("evom", "evom needs a tolerance"),
        ("relative:abc", "not a number"),
        ("evom:0.05:gamma=1", "too many or unknown parts"),
        ("relative:1e-6:delta=1", "too many or unknown parts"),
        ("evom:-0.05", "tolerance must be a finite number > 0"),
        ("evom:0.05:delta=0", "delta must be a finite number > 0"),
        ("relative:inf", "tolerance must be a finite number > 0"),
        ("orlm:nan", "orlm_tolerance must be a finite number > 0"),
    ],
)
def test_bad_rule_names_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_rule(text)
    assert "relative:TOL" in str(caught.value) or "must be" in str(caught.value)


def test_binary_reward_by_default() -> None:
    assert reward_of("correct", True, well_formed=True, executed=True, config=RELATIVE) == 1.0
    for status in ("wrong", "error", "no_code", "timeout", "license_limit"):
        assert reward_of(status, False, well_formed=status != "no_code", executed=False, config=RELATIVE) == 0.0


def test_optional_components_add_up() -> None:
    config = RewardConfig(format_reward=0.1, executed_reward=0.2, status_rewards={"error": -0.5})
    assert reward_of("correct", True, well_formed=True, executed=True, config=config) == pytest.approx(1.3)
    assert reward_of("wrong", False, well_formed=True, executed=True, config=config) == pytest.approx(0.3)
    assert reward_of("error", False, well_formed=True, executed=False, config=config) == pytest.approx(-0.4)
    assert reward_of("no_code", False, well_formed=False, executed=False, config=config) == 0.0


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="comparison"):
        RewardConfig(comparison="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="corect"):
        RewardConfig(status_rewards={"corect": 1.0})
    for field in ("tolerance", "delta", "orlm_tolerance"):
        for bad in (0.0, -1.0, float("nan"), True):
            with pytest.raises(ValueError, match=f"RewardConfig.{field} must be a finite number > 0"):
                RewardConfig(**{field: bad})
