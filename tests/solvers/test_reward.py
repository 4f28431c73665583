"""Comparison modes and the reward formula, against hand-derived values."""

from __future__ import annotations

import pytest

from solvers import RewardConfig
from solvers.reward import matches, reward_of

RELATIVE = RewardConfig()
ORLM = RewardConfig(comparison="orlm")


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


def test_binary_reward_by_default() -> None:
    assert reward_of("correct", True, code_found=True, executed=True, config=RELATIVE) == 1.0
    for status in ("wrong", "error", "no_code", "timeout", "license_limit"):
        assert reward_of(status, False, code_found=status != "no_code", executed=False, config=RELATIVE) == 0.0


def test_optional_components_add_up() -> None:
    config = RewardConfig(format_reward=0.1, executed_reward=0.2, status_rewards={"error": -0.5})
    assert reward_of("correct", True, code_found=True, executed=True, config=config) == pytest.approx(1.3)
    assert reward_of("wrong", False, code_found=True, executed=True, config=config) == pytest.approx(0.3)
    assert reward_of("error", False, code_found=True, executed=False, config=config) == pytest.approx(-0.4)
    assert reward_of("no_code", False, code_found=False, executed=False, config=config) == 0.0


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="comparison"):
        RewardConfig(comparison="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="corect"):
        RewardConfig(status_rewards={"corect": 1.0})
