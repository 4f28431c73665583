"""verify()/verify_code() behaviour beyond the solver matrix: reward components, stopped solves, the
`answer=None` convention, and plumbing failures, all really run in nsjail."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sandbox import Result
from solvers import RewardConfig, get_solver, verify, verify_code
from solvers.harness import build_program

pytestmark = pytest.mark.asyncio(loop_scope="module")

KNAPSACK = """
import gurobipy as gp
from gurobipy import GRB
m = gp.Model()
m.Params.OutputFlag = 0
{params}
w = [23, 31, 29, 44, 53, 38, 63, 85, 89, 82]
v = [92, 57, 49, 68, 60, 43, 67, 84, 87, 72]
x = m.addVars(10, vtype=GRB.BINARY)
m.addConstr(gp.quicksum(w[i] * x[i] for i in range(10)) <= 165)
m.setObjective(gp.quicksum(v[i] * x[i] for i in range(10)), GRB.MAXIMIZE)
m.optimize()
"""
OPTIMUM = 309.0  # the classic instance: items 0, 1, 2, 3, 5


async def test_components_of_the_reward(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    config = RewardConfig(format_reward=0.1, executed_reward=0.2, status_rewards={"error": -1.0})
    right = await verify_code(pool, KNAPSACK.format(params=""), "gurobipy", OPTIMUM, reward=config)
    assert (right.status, right.reward) == ("correct", pytest.approx(1.3))
    wrong = await verify_code(pool, KNAPSACK.format(params=""), "gurobipy", 300.0, reward=config)
    assert (wrong.status, wrong.reward) == ("wrong", pytest.approx(0.3))
    crash = await verify_code(pool, "raise SystemExit(3)", "gurobipy", OPTIMUM, reward=config)
    assert (crash.status, crash.reward) == ("error", pytest.approx(-0.9))
    prose = await verify(pool, "I would use Gurobi.", "gurobipy", OPTIMUM, reward=config)
    assert (prose.status, prose.reward) == ("no_code", 0.0)


async def test_a_solve_stopped_at_a_limit_needs_accept_feasible(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    # a MIP start (items 0 and 1, value 149) and SolutionLimit=1: Gurobi stops on the start, unproven
    code = KNAPSACK.format(params="m.Params.SolutionLimit = 1").replace(
        "m.optimize()", "for i in range(10):\n    x[i].Start = 1 if i < 2 else 0\nm.optimize()"
    )
    stopped = await verify_code(pool, code, "gurobipy", 149.0)
    assert (stopped.status, stopped.solver_status, stopped.objective) == ("no_solve", "SOLUTION_LIMIT", 149.0)
    accepted = await verify_code(pool, code, "gurobipy", 149.0, reward=RewardConfig(accept_feasible=True))
    assert accepted.status == "correct", accepted


async def test_an_optimum_for_a_problem_without_one_is_wrong(pools: Any) -> None:
    outcome = await verify_code(await pools.get("gurobipy"), KNAPSACK.format(params=""), "gurobipy", None)
    assert (outcome.status, outcome.objective, outcome.reward) == ("wrong", OPTIMUM, 0.0)


async def test_orlm_comparison_through_verify(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    orlm = RewardConfig(comparison="orlm")
    assert (await verify_code(pool, KNAPSACK.format(params=""), "gurobipy", 300.0, reward=orlm)).correct  # 3%
    assert not (await verify_code(pool, KNAPSACK.format(params=""), "gurobipy", 290.0, reward=orlm)).correct  # 6.6%


async def test_harness_without_its_key_is_a_sandbox_error(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    result = await pool.run(build_program("pass", get_solver("gurobipy")), stdin="")
    assert result.exit_code == 97 and result.channel == b""


async def test_bad_answer_is_rejected_before_running(pools: Any) -> None:
    with pytest.raises(ValueError, match=r"finite number, or null \(None\)"):
        await verify_code(await pools.get("gurobipy"), "pass", "gurobipy", True)  # type: ignore[arg-type]


class FirstRunFailsPool:
    """Fault injection: the real pool, except that the first run reports a sandbox failure."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.calls = pool, 0

    async def run(self, code: str, stdin: str = "", limits: Any = None) -> Any:
        self.calls += 1
        if self.calls == 1:
            return Result(status="sandbox_error", reason="injected")
        return await self.pool.run(code, stdin=stdin, limits=limits)


async def test_a_sandbox_failure_is_retried_once(pools: Any) -> None:
    code = KNAPSACK.format(params="")
    flaky = FirstRunFailsPool(await pools.get("gurobipy"))
    assert (await verify_code(flaky, code, "gurobipy", OPTIMUM)).status == "correct"
    assert flaky.calls == 2
    flaky = FirstRunFailsPool(await pools.get("gurobipy"))
    assert (await verify_code(flaky, code, "gurobipy", OPTIMUM, sandbox_retries=0)).status == "sandbox_error"


async def test_many_solves_the_last_counts_and_the_channel_stays_bounded(pools: Any) -> None:
    code = (
        "import gurobipy as gp\nfrom gurobipy import GRB\n"
        "for k in range(150):\n"
        "    m = gp.Model()\n    m.Params.OutputFlag = 0\n    x = m.addVar(ub=k)\n"
        "    m.setObjective(x, GRB.MAXIMIZE)\n    m.optimize()\n"
    )
    outcome = await verify_code(await pools.get("gurobipy"), code, "gurobipy", 149.0)
    assert (outcome.status, outcome.solves, outcome.objective) == ("correct", 150, 149.0), outcome


@pytest.mark.parametrize(
    ("tail", "limit_changes"),
    [
        ("print('x' * 5000)", {"output_bytes": 1000}),  # output limit after a correct solve
        ("junk = bytearray(3 << 30)", {"memory_mb": 512}),  # out of memory after a correct solve
    ],
    ids=["output_limit", "memory"],
)
async def test_sandbox_limits_after_a_correct_solve_earn_nothing(
    pools: Any, tail: str, limit_changes: dict[str, int]
) -> None:
    pool = await pools.get("gurobipy")
    limits = dataclasses.replace(pool.limits, **limit_changes)
    outcome = await verify_code(pool, KNAPSACK.format(params="") + tail, "gurobipy", OPTIMUM, limits=limits)
    assert (outcome.status, outcome.reward) == ("error", 0.0), outcome
    assert "sandbox stopped" in outcome.reason or "MemoryError" in outcome.reason
