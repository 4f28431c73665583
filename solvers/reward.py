"""Outcome of one verified completion and the reward it earns.

    config = RewardConfig()                                # binary: 1 if correct, else 0
    config = RewardConfig(comparison="orlm")               # round, then 5% relative (ORLM's eval script)
    config = RewardConfig(comparison="evom", tolerance=0.05)   # |pred - gt| / max(|gt|, delta) <= 5% (EVOM)
    config = RewardConfig(format_reward=0.1, executed_reward=0.1, status_rewards={"error": -0.5})
    matches(pred, answer, config); reward_of(status, correct, well_formed=..., executed=..., config=config)

Comparisons (answer = ground truth, a float; `answer: null` is handled by the verifier, not here):
- "relative" (default, the SIRL/OptMATH convention): |pred - answer| / (|answer| + 1) < tolerance (1e-6);
- "evom" (EVOM, arXiv 2604.00442, as its summaries report it): |pred - answer| / max(|answer|, delta) <= tolerance,
  with tolerance 0.05 in its main tables and 1e-4 in its strict check; `delta` (default 1e-6) only guards a zero
  answer, where the rule becomes |pred| <= tolerance * delta;
- "orlm": both rounded to the nearest integer, then |pred - answer| / |answer| <= orlm_tolerance (0.05)
  (|pred| <= 0.05 when the rounded answer is 0), as in ORLM's `eval/execute.py`.
A non-finite prediction never matches. `rule_key(config)` names a rule ("relative:1e-06", "evom:0.05", "orlm") and
`parse_rule(key)` reads one back, for scoring one outcome under several rules (`correct_under`).

Reward = (status_rewards[status] if the status is listed, else correct_reward if correct, else 0)
         + format_reward when the answer has its format's structure (`solvers.extract.well_formed`)
         + executed_reward when the program ran to a clean exit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
Comparison = Literal["relative", "evom", "orlm"]
COMPARISONS: tuple[str, ...] = get_args(Comparison)


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """How outcomes become rewards. Defaults are EVOM's binary outcome reward.

    accept_feasible: compare the objective of a solve that stopped at a limit with an incumbent (for
        example a TimeLimit the program set) as if it were optimal; off by default, since only a proven
        optimum answers the question.
    min_variables: a last solved model with fewer variables is "no_solve" (a model with an empty or
        constant objective cannot have found the answer).
    comparison, tolerance, delta, orlm_tolerance: the answer rule (module docstring); `tolerance` serves
        "relative" and "evom", `delta` only "evom".
    """

    comparison: Comparison = "relative"
    tolerance: float = 1e-6
    delta: float = 1e-6
    orlm_tolerance: float = 0.05
    correct_reward: float = 1.0
    format_reward: float = 0.0
    executed_reward: float = 0.0
    status_rewards: Mapping[str, float] = field(default_factory=dict)
    accept_feasible: bool = False
    min_variables: int = 1

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"RewardConfig.comparison must be one of {COMPARISONS}, got {self.comparison!r}")
        for name in ("tolerance", "delta", "orlm_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"RewardConfig.{name} must be a finite number > 0, got {value!r}")
        unknown = sorted(set(self.status_rewards) - set(OUTCOME_STATUSES))
        if unknown:
            raise ValueError(f"RewardConfig.status_rewards has unknown statuses {unknown}; valid: {OUTCOME_STATUSES}")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The verdict on one completion. `reason` says why in words; `error_kind` is its kind of failure (None when
    correct; the taxonomy is in `solvers.failures`); `solver_status` is the solver's own status of the last solve
    (e.g. "OPTIMAL", "pywraplp:INFEASIBLE"); `solves` counts solve calls; `wall_s` is the sandbox run's wall time
    (0 when nothing ran)."""

    status: OutcomeStatus
    objective: float | None = None
    reward: float = 0.0
    correct: bool = False
    reason: str = ""
    error_kind: str | None = None
    solver_status: str = ""
    solves: int = 0
    wall_s: float = 0.0


def matches(pred: float, answer: float, config: RewardConfig) -> bool:
    """Whether objective `pred` equals the ground truth `answer` under `config.comparison`."""
    if not (math.isfinite(pred) and math.isfinite(answer)):
        return False
    if config.comparison == "relative":
        return abs(pred - answer) / (abs(answer) + 1.0) < config.tolerance
    if config.comparison == "evom":
        return abs(pred - answer) / max(abs(answer), config.delta) <= config.tolerance
    pred_r, answer_r = round(pred), round(answer)
    if answer_r == 0:
        return abs(pred_r) <= config.orlm_tolerance
    return abs(pred_r - answer_r) / abs(answer_r) <= config.orlm_tolerance


def correct_under(status: str, objective: float | None, answer: float | None, config: RewardConfig) -> bool:
    """Whether an outcome judged under one rule is correct under `config`'s: only an objective compared with an
    answer ("correct" or "wrong" with both present) depends on the rule; every other verdict (a proof of no
    optimum, a crash, a solve without a proven optimum) is the same under every rule."""
    if answer is None or status not in ("correct", "wrong") or objective is None:
        return status == "correct"
    return matches(objective, answer, config)


def rule_key(config: RewardConfig) -> str:
    """The short name of `config`'s answer rule: "relative:1e-06", "evom:0.05" (delta shown when not the
    default: "evom:0.05:delta=1.0"), "orlm" ("orlm:0.1" for another tolerance)."""
    default = RewardConfig()
    if config.comparison == "orlm":
        return "orlm" if config.orlm_tolerance == default.orlm_tolerance else f"orlm:{config.orlm_tolerance!r}"
    key = f"{config.comparison}:{config.tolerance!r}"
    if config.comparison == "evom" and config.delta != default.delta:
        key += f":delta={config.delta!r}"
    return key


def parse_rule(text: str, base: RewardConfig | None = None) -> RewardConfig:
    """The rule named by `text` ("relative:1e-6", "evom:0.05", "evom:1e-4:delta=1", "orlm", "orlm:0.1") on top of
    `base` (its other fields kept). A ValueError says what is wrong and shows the accepted forms."""
    forms = "relative:TOL, evom:TOL, evom:TOL:delta=D, orlm or orlm:TOL (TOL, D > 0)"
    name, _, rest = text.strip().partition(":")
    parts = rest.split(":") if rest else []
    if name not in COMPARISONS:
        raise ValueError(f"answer rule {text!r}: unknown comparison {name!r}; valid: {COMPARISONS} ({forms})")
    if name != "orlm" and not parts:
        raise ValueError(f"answer rule {text!r}: {name} needs a tolerance, e.g. {name}:1e-6 ({forms})")
    if len(parts) > (2 if name == "evom" else 1) or (len(parts) == 2 and not parts[1].startswith("delta=")):
        raise ValueError(f"answer rule {text!r}: too many or unknown parts ({forms})")
    try:
        numbers = [float(p.removeprefix("delta=")) for p in parts]
    except ValueError:
        raise ValueError(f"answer rule {text!r}: not a number ({forms})") from None
    fields: dict[str, float | str] = {"comparison": name}
    if numbers:
        fields["orlm_tolerance" if name == "orlm" else "tolerance"] = numbers[0]
    if len(numbers) == 2:
        fields["delta"] = numbers[1]
    try:
        return replace(base or RewardConfig(), **fields)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"answer rule {text!r}: {exc}") from None


def reward_of(status: str, correct: bool, *, well_formed: bool, executed: bool, config: RewardConfig) -> float:
    """The scalar reward of an outcome (formula in the module docstring)."""
    base = config.status_rewards.get(status, config.correct_reward if correct else 0.0)
    return base + (config.format_reward if well_formed else 0.0) + (config.executed_reward if executed else 0.0)
