"""The seven solver adapters: prompt instructions, sandbox preloads, hook file and status tables per API.

Each adapter is data (`ApiAdapter`): the hook in `solvers/hooks/<hook>.py` sends the solver's raw status
code or name, and the adapter's table turns it into a canonical `SolveState`. A raw status missing from the
table is read as "stopped": `feasible` when the solver still returned an objective, `no_solution` otherwise.
License limits are recognised from the solver's own error codes, never from printed text:
Gurobi errno 10010 (model too large for the size-limited license) and 10009 (no valid license),
COPT retcode 4 (COPT_RETCODE_LICENSE, raised by solve()/solveLP() for models over the size limits).

`solvers.registry` lists them by name; `python -m solvers list` shows which are installed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from solvers.base import SolveState, SolveStateName
from solvers.harness import RUNTIME_MODULES

_COMMON = (
    "Write one complete, self-contained Python program that builds the whole model from the data in the "
    "problem and solves it. It is run as a script with no arguments and no input; you do not need to print "
    "the result in any particular format: the solver's own status and objective are read, and if the "
    "program solves several models, the last one solved is the one judged. If the problem has no optimal "
    "solution, let the solver say so."
)


@dataclass(frozen=True, kw_only=True)
class ApiAdapter:
    """A `Solver` described by data. `statuses` maps (api, raw status) to a canonical state; api is "" for
    single-API solvers. `license_codes` are the error codes (errno / retcode) of license refusals, and
    `license_exception` the class name of the solver's exception that carries them."""

    name: str
    package: str
    pip_requirement: str
    instructions: str
    preload: tuple[str, ...]
    hook: str
    statuses: Mapping[tuple[str, str], SolveStateName]
    status_names: Mapping[tuple[str, str], str] = field(default_factory=dict)
    status_key: str = "status"
    license_exception: str = ""
    license_codes: frozenset[int] = frozenset()

    def classify(self, record: Mapping[str, Any]) -> SolveState:
        if "raised" in record:
            return self._classify_exception(record["raised"])
        if "describe_error" in record:
            error = record["describe_error"]
            return SolveState(state="error", raw=f"harness could not read the model: {error.get('message', '')}")
        api = str(record.get("api", ""))
        raw = str(record.get(self.status_key))
        key = (api, raw)
        objective = record.get("objective")
        state = self.statuses.get(key)
        if state is None:
            state = "feasible" if objective is not None else "no_solution"
        name = self.status_names.get(key, raw)
        if state not in ("optimal", "feasible"):
            objective = None  # what a solver leaves in its objective after proving infeasibility means nothing
        return SolveState(
            state=state,
            raw=f"{api}:{name}" if api else name,
            objective=None if objective is None else float(objective),
            variables=record.get("variables"),
            constraints=record.get("constraints"),
        )

    def _classify_exception(self, exception: Mapping[str, Any]) -> SolveState:
        raw = f"{exception.get('type', 'Exception')}: {exception.get('message', '')}"
        if self.is_license_limit(exception):
            return SolveState(state="license_limit", raw=raw)
        return SolveState(state="error", raw=raw)

    def is_license_limit(self, exception: Mapping[str, Any]) -> bool:
        return (
            bool(self.license_codes)
            and str(exception.get("type", "")).rsplit(".", 1)[-1] == self.license_exception
            and exception.get("code") in self.license_codes
        )


def _preload(*modules: str) -> tuple[str, ...]:
    """The solver's modules, then the harness runtime's, for the sandbox workers to import once."""
    return (*modules, *RUNTIME_MODULES)


def _table(api: str, states: Mapping[str | int, SolveStateName]) -> dict[tuple[str, str], SolveStateName]:
    return {(api, str(raw)): state for raw, state in states.items()}


_GUROBI_STATUS_NAMES = {
    1: "LOADED",
    2: "OPTIMAL",
    3: "INFEASIBLE",
    4: "INF_OR_UNBD",
    5: "UNBOUNDED",
    6: "CUTOFF",
    7: "ITERATION_LIMIT",
    8: "NODE_LIMIT",
    9: "TIME_LIMIT",
    10: "SOLUTION_LIMIT",
    11: "INTERRUPTED",
    12: "NUMERIC",
    13: "SUBOPTIMAL",
    14: "INPROGRESS",
    15: "USER_OBJ_LIMIT",
    16: "WORK_LIMIT",
    17: "MEM_LIMIT",
}
_COPT_STATUS_NAMES = {
    0: "UNSTARTED",
    1: "OPTIMAL",
    2: "INFEASIBLE",
    3: "UNBOUNDED",
    4: "INF_OR_UNB",
    5: "NUMERICAL",
    6: "NODELIMIT",
    7: "IMPRECISE",
    8: "TIMEOUT",
    9: "UNFINISHED",
    10: "INTERRUPTED",
}
_PYWRAPLP_STATUS_NAMES = {
    0: "OPTIMAL",
    1: "FEASIBLE",
    2: "INFEASIBLE",
    3: "UNBOUNDED",
    4: "ABNORMAL",
    5: "MODEL_INVALID",
    6: "NOT_SOLVED",
}
_CP_SAT_STATUS_NAMES = {0: "UNKNOWN", 1: "MODEL_INVALID", 2: "FEASIBLE", 3: "INFEASIBLE", 4: "OPTIMAL"}
_PULP_SOLUTION_STATUS_NAMES = {
    0: "NoSolutionFound",
    1: "Optimal",
    2: "IntegerFeasible",
    -1: "Infeasible",
    -2: "Unbounded",
}

GUROBIPY = ApiAdapter(
    name="gurobipy",
    package="gurobipy",
    pip_requirement="gurobipy",
    instructions=(
        "Use gurobipy (`import gurobipy as gp`, `from gurobipy import GRB`): create a `gp.Model()`, add "
        "variables and constraints, set the objective with `model.setObjective(..., GRB.MINIMIZE or "
        "GRB.MAXIMIZE)` and call `model.optimize()`. " + _COMMON
    ),
    preload=_preload("gurobipy"),
    hook="gurobipy_hook",
    statuses=_table("", {2: "optimal", 3: "infeasible", 4: "inf_or_unbd", 5: "unbounded"}),
    status_names={("", str(code)): name for code, name in _GUROBI_STATUS_NAMES.items()},
    license_exception="GurobiError",
    license_codes=frozenset({10009, 10010}),
)

COPTPY = ApiAdapter(
    name="coptpy",
    package="coptpy",
    pip_requirement="coptpy",
    instructions=(
        "Use coptpy (`import coptpy as cp`, `from coptpy import COPT`): create `env = cp.Envr()` and "
        "`model = env.createModel()`, add variables and constraints, set the objective with "
        "`model.setObjective(..., sense=COPT.MINIMIZE or COPT.MAXIMIZE)` and call `model.solve()`. " + _COMMON
    ),
    preload=_preload("coptpy"),
    hook="coptpy_hook",
    statuses=_table("", {1: "optimal", 2: "infeasible", 3: "unbounded", 4: "inf_or_unbd"}),
    status_names={("", str(code)): name for code, name in _COPT_STATUS_NAMES.items()},
    license_exception="CoptError",
    license_codes=frozenset({4}),
)

ORTOOLS = ApiAdapter(
    name="ortools",
    package="ortools",
    pip_requirement="ortools",
    instructions=(
        "Use Google OR-Tools. For linear and mixed-integer models use `from ortools.linear_solver import "
        "pywraplp` with `solver = pywraplp.Solver.CreateSolver('SCIP')` (or 'GLOP' for pure LPs), "
        "`solver.Minimize(...)`/`solver.Maximize(...)` and `status = solver.Solve()`; for integer "
        "combinatorial models you may use CP-SAT (`from ortools.sat.python import cp_model`, "
        "`cp_model.CpSolver().Solve(model)`), or MathOpt (`from ortools.math_opt.python import mathopt`, "
        "`mathopt.solve(model, mathopt.SolverType.GSCIP)`). " + _COMMON
    ),
    preload=_preload(
        "ortools.linear_solver.pywraplp", "ortools.sat.python.cp_model", "ortools.math_opt.python.mathopt"
    ),
    hook="ortools_hook",
    statuses={
        **_table("pywraplp", {0: "optimal", 2: "infeasible", 3: "unbounded"}),
        **_table("cp_sat", {4: "optimal", 3: "infeasible"}),
        **_table(
            "mathopt",
            {
                "OPTIMAL": "optimal",
                "INFEASIBLE": "infeasible",
                "UNBOUNDED": "unbounded",
                "INFEASIBLE_OR_UNBOUNDED": "inf_or_unbd",
            },
        ),
    },
    status_names={
        **{("pywraplp", str(code)): name for code, name in _PYWRAPLP_STATUS_NAMES.items()},
        **{("cp_sat", str(code)): name for code, name in _CP_SAT_STATUS_NAMES.items()},
    },
)

PYSCIPOPT = ApiAdapter(
    name="pyscipopt",
    package="pyscipopt",
    pip_requirement="evom[solvers-extra]",
    instructions=(
        "Use PySCIPOpt (`from pyscipopt import Model, quicksum`): create `model = Model()`, add variables "
        "with `model.addVar(...)` and constraints with `model.addCons(...)`, set the objective with "
        "`model.setObjective(..., sense='minimize' or 'maximize')` and call `model.optimize()`. " + _COMMON
    ),
    preload=_preload("pyscipopt"),
    hook="pyscipopt_hook",
    statuses=_table(
        "", {"optimal": "optimal", "infeasible": "infeasible", "unbounded": "unbounded", "inforunbd": "inf_or_unbd"}
    ),
)

HIGHSPY = ApiAdapter(
    name="highspy",
    package="highspy",
    pip_requirement="highspy",
    instructions=(
        "Use highspy (`import highspy`): create `h = highspy.Highs()`, add variables with `h.addVariable(...)` "
        "(or `h.addIntegral(...)` for integers) and constraints with `h.addConstr(...)`, then call "
        "`h.minimize(objective)` or `h.maximize(objective)` (or set the objective and sense and call "
        "`h.run()`). " + _COMMON
    ),
    preload=_preload("highspy"),
    hook="highspy_hook",
    statuses=_table(
        "",
        {
            "kOptimal": "optimal",
            "kModelEmpty": "optimal",
            "kInfeasible": "infeasible",
            "kUnbounded": "unbounded",
            "kUnboundedOrInfeasible": "inf_or_unbd",
        },
    ),
)

PULP = ApiAdapter(
    name="pulp",
    package="pulp",
    pip_requirement="evom[solvers-extra]",
    instructions=(
        "Use PuLP (`import pulp`): create `prob = pulp.LpProblem('name', pulp.LpMinimize or pulp.LpMaximize)`, "
        "add variables with `pulp.LpVariable(...)`, the objective with `prob += expression` and constraints "
        "with `prob += constraint`, then call `prob.solve(pulp.PULP_CBC_CMD(msg=False))`. " + _COMMON
    ),
    preload=_preload("pulp"),
    hook="pulp_hook",
    # PuLP's `status` says "Optimal" for any integer-feasible CBC answer; `sol_status` tells the two apart.
    status_key="solution_status",
    statuses=_table("", {1: "optimal", 2: "feasible", -1: "infeasible", -2: "unbounded"}),
    status_names={("", str(code)): name for code, name in _PULP_SOLUTION_STATUS_NAMES.items()},
)

PYOMO = ApiAdapter(
    name="pyomo",
    package="pyomo",
    pip_requirement="evom[solvers-extra]",
    instructions=(
        "Use Pyomo (`import pyomo.environ as pyo`) with the HiGHS solver: build a `pyo.ConcreteModel()`, "
        "then `results = pyo.SolverFactory('highs').solve(model, load_solutions=False)`; check "
        "`results.solver.termination_condition` and call `model.solutions.load_from(results)` only when it "
        "is optimal. " + _COMMON
    ),
    preload=_preload("pyomo.environ", "highspy"),
    hook="pyomo_hook",
    statuses=_table(
        "",
        {
            "optimal": "optimal",
            "globallyOptimal": "optimal",
            "infeasible": "infeasible",
            "unbounded": "unbounded",
            "infeasibleOrUnbounded": "inf_or_unbd",
        },
    ),
)
