"""Outcome of one verified completion and the reward it earns.

    config = RewardConfig()                                # binary: 1 if correct, else 0
    config = RewardConfig(comparison="orlm")               # round, then 5% relative (ORLM's eval script)
    config = RewardConfig(format_reward=0.1, executed_reward=0.1, status_rewards={"error": -0.5})
    matches(pred, answer, config); reward_of(status, correct, code_found=..., executed=..., config=config)

Comparisons (answer = ground truth, a float; `answer: null` is handled by the verifier, not here):
- "relative" (default, the SIRL/OptMATH convention): |pred - answer| / (|answer| + 1) < tolerance (1e-6);
- "orlm": both rounded to the nearest integer, then |pred - answer| / |answer| <= 0.05
  (|pred| <= 0.05 when the rounded answer is 0), as in ORLM's `eval/execute.py`.

Reward = (status_rewards[status] if the status is listed, else correct_reward if correct, else 0)
         + format_reward when code was extracted + executed_reward when the program ran to a clean exit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

OutcomeStatus = Literal[
    "correct",
    "wrong",
    "infeasible",
    "unbounded",
    "no_solve",
    "error",
    "timeout",
    "no_code",
    "license_limit",
    "sandbox_error",
]
OUTCOME_STATUSES: tuple[str, ...] = get_args(OutcomeStatus)


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """How outcomes become rewards. Defaults are EVOM's binary outcome reward.

    accept_feasible: compare the objective of a solve that stopped at a limit with an incumbent (for
        example a TimeLimit the program set) as if it were optimal; off by default, since only a proven
        optimum answers the question.
    min_variables: a last solved model with fewer variables is "no_solve" (a model with an empty or
        constant objective cannot have found the answer).
    """

    comparison: Literal["relative", "orlm"] = "relative"
    tolerance: float = 1e-6
    orlm_tolerance: float = 0.05
    correct_reward: float = 1.0
    format_reward: float = 0.0
    executed_reward: float = 0.0
    status_rewards: Mapping[str, float] = field(default_factory=dict)
    accept_feasible: bool = False
    min_variables: int = 1

    def __post_init__(self) -> None:
        if self.comparison not in ("relative", "orlm"):
            raise ValueError(f"RewardConfig.comparison must be 'relative' or 'orlm', got {self.comparison!r}")
        unknown = sorted(set(self.status_rewards) - set(OUTCOME_STATUSES))
        if unknown:
            raise ValueError(f"RewardConfig.status_rewards has unknown statuses {unknown}; valid: {OUTCOME_STATUSES}")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The verdict on one completion. `reason` says why in words; `solver_status` is the solver's own
    status of the last solve (e.g. "OPTIMAL", "pywraplp:INFEASIBLE"); `solves` counts solve calls;
    `wall_s` is the sandbox run's wall time (0 when nothing ran)."""

    status: OutcomeStatus
    objective: float | None = None
    reward: float = 0.0
    correct: bool = False
    reason: str = ""
    solver_status: str = ""
    solves: int = 0
    wall_s: float = 0.0


def matches(pred: float, answer: float, config: RewardConfig) -> bool:
    """Whether objective `pred` equals the ground truth `answer` under `config.comparison`."""
    if not (math.isfinite(pred) and math.isfinite(answer)):
        return False
    if config.comparison == "relative":
        return abs(pred - answer) / (abs(answer) + 1.0) < config.tolerance
    pred_r, answer_r = round(pred), round(answer)
    if answer_r == 0:
        return abs(pred_r) <= config.orlm_tolerance
    return abs(pred_r - answer_r) / abs(answer_r) <= config.orlm_tolerance


def reward_of(status: str, correct: bool, *, code_found: bool, executed: bool, config: RewardConfig) -> float:
    """The scalar reward of an outcome (formula in the module docstring)."""
    base = config.status_rewards.get(status, config.correct_reward if correct else 0.0)
    return base + (config.format_reward if code_found else 0.0) + (config.executed_reward if executed else 0.0)
