"""The size-limited licenses shipped with the pip gurobipy and coptpy wheels, hit by real oversized models,
are reported as license_limit (from GRB errno 10010 / COPT retcode 4), never as the program's error."""

from __future__ import annotations

from typing import Any

import pytest

from solvers import verify_code

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _gurobi(n: int, vtype: str, *, catch: bool = False) -> str:
    solve = "m.optimize()"
    if catch:
        solve = "try:\n    m.optimize()\nexcept gp.GurobiError as e:\n    print('solver failed:', e)"
    return (
        "import gurobipy as gp\nfrom gurobipy import GRB\n"
        f"m = gp.Model()\nx = m.addVars({n}, ub=1, vtype=GRB.{vtype})\n"
        f"m.addConstr(x.sum() <= {n} - 0.5)\nm.setObjective(x.sum(), GRB.MAXIMIZE)\n{solve}\n"
    )


def _copt(n: int, vtype: str) -> str:
    return (
        "import coptpy as cp\nfrom coptpy import COPT\n"
        "env = cp.Envr()\nm = env.createModel()\n"
        f"x = m.addVars({n}, ub=1, vtype=COPT.{vtype})\n"
        f"m.addConstr(x.sum() <= {n} - 0.5)\nm.setObjective(x.sum(), sense=COPT.MAXIMIZE)\nm.solve()\n"
    )


@pytest.mark.parametrize(
    ("solver", "code"),
    [
        ("gurobipy", _gurobi(2500, "INTEGER")),
        ("gurobipy", _gurobi(2500, "CONTINUOUS")),
        ("gurobipy", _gurobi(2500, "INTEGER", catch=True)),  # the program swallowed the error and printed
        ("coptpy", _copt(2500, "INTEGER")),
        ("coptpy", _copt(12000, "CONTINUOUS")),  # COPT's LP limit is 10000
    ],
    ids=["grb-mip", "grb-lp", "grb-mip-caught", "copt-mip", "copt-lp"],
)
async def test_oversized_model_is_license_limit(pools: Any, solver: str, code: str) -> None:
    outcome = await verify_code(await pools.get(solver), code, solver, 1.0)
    assert (outcome.status, outcome.reward) == ("license_limit", 0.0), outcome


async def test_copt_lp_under_its_lp_limit_is_solved(pools: Any) -> None:
    outcome = await verify_code(await pools.get("coptpy"), _copt(5000, "CONTINUOUS"), "coptpy", 4999.5)
    assert outcome.status == "correct", outcome


async def test_gurobi_model_just_under_the_limit_is_solved(pools: Any) -> None:
    outcome = await verify_code(await pools.get("gurobipy"), _gurobi(1999, "INTEGER"), "gurobipy", 1998.0)
    assert outcome.status == "correct", outcome
