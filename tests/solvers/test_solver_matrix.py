"""Every solver, really run in nsjail: a tiny LP, a MILP whose LP relaxation differs, an infeasible and an
unbounded model, each judged right; `def main()` programs and silent programs are rewarded; the same
programs with a wrong answer, or with the optimisation sense flipped by the harness, are not.

The models (programs/<solver>_<case>.py): LP  max x + y  s.t. 2x + y <= 4, x + 2y <= 4, x, y >= 0 -> 8/3;
MILP the same over the integers -> 2 (relaxation 8/3); infeasible: x + y >= 5 and x + y <= 3;
unbounded: max x + y s.t. x - y <= 1. Every `*_milp.py` is written as `def main()` + `__main__` guard
and prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from solvers import verify, verify_code

module_loop = pytest.mark.asyncio(loop_scope="module")

LP, MILP = 8.0 / 3.0, 2.0
ANSWERS: dict[str, float | None] = {"lp": LP, "milp": MILP, "infeasible": None, "unbounded": None}
# For a problem that has an optimum, a program proving infeasible/unbounded earns that status, not "correct".
STATUS_WITH_AN_ANSWER = {"infeasible": "infeasible", "unbounded": "unbounded"}
CASES = sorted(path.stem for path in (Path(__file__).resolve().parent / "programs").glob("*.py"))
SOLVERS = ("gurobipy", "ortools", "coptpy", "pyscipopt", "highspy", "pulp", "pyomo")


def _solver_and_case(name: str) -> tuple[str, str]:
    return name.split("_")[0], name.rsplit("_", 1)[1]


def test_every_solver_has_all_four_cases() -> None:
    for solver in SOLVERS:
        assert {_solver_and_case(name)[1] for name in CASES if name.startswith(solver + "_")} == set(ANSWERS)


@module_loop
@pytest.mark.parametrize("name", CASES)
async def test_program_is_judged_right(pools: Any, program: Callable[[str], str], name: str) -> None:
    solver, case = _solver_and_case(name)
    pool = await pools.get(solver)
    outcome = await verify_code(pool, program(name), solver, ANSWERS[case])
    assert (outcome.status, outcome.reward, outcome.correct) == ("correct", 1.0, True), outcome
    assert outcome.solves == 1
    if case in ("lp", "milp"):
        assert outcome.objective == pytest.approx(ANSWERS[case], rel=1e-6)
        wrong = MILP if case == "lp" else LP  # the MILP's optimum for the LP and its relaxation for the MILP
        outcome = await verify_code(pool, program(name), solver, wrong)
        assert (outcome.status, outcome.reward) == ("wrong", 0.0), outcome
        printed = program(name) + f"\nprint('Optimal value: {wrong!r}')\n"  # solve one model, print another's value
        outcome = await verify_code(pool, printed, solver, wrong)
        assert (outcome.status, outcome.reward) == ("wrong", 0.0), outcome
        flipped = await verify_code(pool, program(name), solver, ANSWERS[case], flip_sense=True)
        assert (flipped.status, flipped.objective) == ("wrong", 0.0), flipped
    else:
        outcome = await verify_code(pool, program(name), solver, 3.0)
        assert (outcome.status, outcome.reward, outcome.objective) == (STATUS_WITH_AN_ANSWER[case], 0.0, None)


@module_loop
@pytest.mark.parametrize("solver", SOLVERS)
async def test_completion_with_a_banner_printing_program(
    pools: Any, program: Callable[[str], str], solver: str
) -> None:
    completion = f"We maximise x + y.\n\n```python\n{program(solver + '_lp')}```\nThe optimum is 21."
    outcome = await verify(await pools.get(solver), completion, solver, LP)
    assert outcome.status == "correct", outcome
