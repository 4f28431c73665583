"""The failure taxonomy (`Outcome.error_kind`): real programs run through the real harness in nsjail, one per kind,
and the mapping's rules on hand-made records."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sandbox import Result
from solvers import get_solver, verify, verify_code
from solvers.failures import ERROR_KINDS, error_kind, exception_kind, solver_modules

on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the pools fixture lives on the module's loop

LP = """import gurobipy as gp
from gurobipy import GRB
m = gp.Model()
m.Params.OutputFlag = 0
x, y = m.addVar(), m.addVar()
m.setObjective(3 * x + 2 * y, GRB.MAXIMIZE)
m.addConstr(x + y <= 4)
m.addConstr(x + 3 * y <= 6)
"""  # optimum 12, once solved
SOLVE = "m.optimize()\n"
INFEASIBLE = "import gurobipy as gp\nm = gp.Model()\nx = m.addVar(lb=5, ub=3)\nm.optimize()\n"

# (kind, program, answer): each program really runs under gurobipy's harness
CASES = [
    ("syntax", "import gurobipy as gp\nm = gp.Model(\n", 12.0),
    ("syntax", "if True:\nm = 1\n", 12.0),  # IndentationError
    ("import", "import gurobipyy as gp\n", 12.0),  # a module that does not exist
    ("solver_api", LP + "m.optimise()\n", 12.0),  # the British spelling: gurobipy.Model has no such method
    ("solver_api", "import gurobipy as gp\nm = gp.Modell()\n", 12.0),  # the module has no such name
    ("solver_api", "from gurobipy import Modell\n", 12.0),  # nor does it export it
    ("solver_api", INFEASIBLE + "print(m.ObjVal)\n", 12.0),  # gurobipy refuses ObjVal of an unsolved model
    ("type_value", "import gurobipy as gp\nm = gp.Model()\nm.addVar(0, 1, 0, 'C', 'x', None, None, 3)\n", 12.0),
    ("type_value", LP + SOLVE + "n = int('twelve')\n", 12.0),
    ("solver_error", LP + "m.setParam('NoSuchParam', 1)\n" + SOLVE, 12.0),  # GurobiError
    ("runtime", LP + SOLVE + "ratio = 1 / 0\n", 12.0),
    ("runtime", LP + SOLVE + "best = None\nprint(best.value)\n", 12.0),  # AttributeError, but not the solver's
    ("runtime", LP + SOLVE + "import sys\nsys.exit(3)\n", 12.0),
    ("no_solve", LP, 12.0),  # never solved
    ("wrong_claim", INFEASIBLE, 12.0),  # infeasible, but the problem has an optimum
    ("wrong_claim", LP + SOLVE, None),  # an optimum, but the problem has none
    ("wrong_objective", LP + SOLVE, 13.0),
    (None, LP + SOLVE, 12.0),
]


@on_module_loop
@pytest.mark.parametrize(("kind", "code", "answer"), CASES)
async def test_each_kind_from_a_real_program(pools: Any, kind: str | None, code: str, answer: float | None) -> None:
    outcome = await verify_code(await pools.get("gurobipy"), code, "gurobipy", answer)
    assert outcome.error_kind == kind, outcome
    assert (outcome.error_kind is None) == outcome.correct


@on_module_loop
async def test_memory_timeout_and_no_code(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    small = dataclasses.replace(pool.limits, memory_mb=512)
    memory = await verify_code(pool, LP + SOLVE + "junk = bytearray(3 << 30)\n", "gurobipy", 12.0, limits=small)
    assert (memory.status, memory.error_kind) == ("error", "memory"), memory
    short = dataclasses.replace(pool.limits, wall_s=1.0, cpu_s=1.0)
    timeout = await verify_code(pool, LP + SOLVE + "while True:\n    pass\n", "gurobipy", 12.0, limits=short)
    assert (timeout.status, timeout.error_kind) == ("timeout", "timeout"), timeout
    prose = await verify(pool, "I would model it with two variables.", "gurobipy", 12.0)
    assert (prose.status, prose.error_kind) == ("no_code", "no_code")


@on_module_loop
async def test_license_limit(pools: Any) -> None:
    code = (
        "import gurobipy as gp\nfrom gurobipy import GRB\nm = gp.Model()\n"
        "x = m.addVars(2500, ub=1, vtype=GRB.INTEGER)\nm.addConstr(x.sum() <= 10)\n"
        "m.setObjective(x.sum(), GRB.MAXIMIZE)\nm.optimize()\n"
    )
    outcome = await verify_code(await pools.get("gurobipy"), code, "gurobipy", 10.0)
    assert (outcome.status, outcome.error_kind) == ("license_limit", "license_limit"), outcome


@on_module_loop
async def test_solver_api_misuse_under_another_solver(pools: Any) -> None:
    code = (
        "from ortools.linear_solver import pywraplp\n"
        "s = pywraplp.Solver.CreateSolver('GLOP')\nx = s.NumVar(0, 4, 'x')\ns.Maximize(x)\ns.Solvee()\n"
    )
    outcome = await verify_code(await pools.get("ortools"), code, "ortools", 4.0)
    assert outcome.error_kind == "solver_api", outcome  # a SWIG class: only the exception's object tells


class SandboxFails:
    """Every run reports a sandbox failure (not the program's doing)."""

    async def run(self, code: str, stdin: str = "", limits: Any = None) -> Any:
        return Result(status="sandbox_error", reason="injected")


@on_module_loop
async def test_a_sandbox_failure_is_infrastructure() -> None:
    outcome = await verify_code(SandboxFails(), LP + SOLVE, "gurobipy", 12.0)
    assert (outcome.status, outcome.error_kind) == ("sandbox_error", "infrastructure")


def test_every_kind_is_named() -> None:
    assert set(ERROR_KINDS) >= {kind for kind, _, _ in CASES if kind is not None} | {"memory", "timeout", "no_code"}


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        ({"type": "builtins.ImportError", "module": "gurobipy"}, "solver_api"),
        ({"type": "builtins.ImportError", "module": "numpyy"}, "import"),
        ({"type": "builtins.ModuleNotFoundError", "module": "gurobipy.nothing"}, "import"),
        ({"type": "builtins.AttributeError", "owner": "gurobipy._model"}, "solver_api"),
        ({"type": "builtins.AttributeError", "owner": "builtins"}, "runtime"),
        ({"type": "builtins.AttributeError"}, "runtime"),  # no owner recorded: not attributed to the solver
        ({"type": "builtins.MemoryError"}, "memory"),
        ({"type": "gurobipy._exception.GurobiError", "code": 10005}, "solver_error"),
        ({"type": "coptpy.CoptError"}, "runtime"),  # another solver's class under gurobipy
        ({"type": "builtins.KeyError"}, "runtime"),
    ],
)
def test_exception_records(exception: dict[str, Any], kind: str) -> None:
    assert exception_kind(exception, get_solver("gurobipy")) == kind


def test_the_solvers_modules_include_what_the_workers_preload() -> None:
    assert solver_modules(get_solver("pyomo")) == {"pyomo", "highspy"}
    assert solver_modules(get_solver("ortools")) == {"ortools"}


def test_statuses_without_a_run() -> None:
    assert error_kind("correct", answer=1.0) is None
    assert error_kind("error", answer=1.0, ran_clean=True) == "solver_error"  # the last solve call failed
    assert error_kind("error", answer=1.0, sandbox_status="output_limit") == "runtime"
    assert error_kind("error", answer=1.0, sandbox_status="memory") == "memory"
