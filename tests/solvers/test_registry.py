"""The Solver registry: lookup errors list the valid names, a missing package names its pip requirement,
and every adapter is complete (instructions, preloads that import, a hook file, status tables)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import solvers
from solvers import Solver, SolverUnavailableError, UnknownSolverError, available_solvers, get_solver
from solvers import registry as registry_module
from solvers.adapters import ApiAdapter
from solvers.harness import HOOKS_DIR
from solvers.registry import register, solver_names

BUILT_IN = ["coptpy", "gurobipy", "highspy", "ortools", "pulp", "pyomo", "pyscipopt"]


def test_the_package_exports_its_contract_and_nothing_else() -> None:
    assert sorted(solvers.__all__) == [
        "ExtractConfig",
        "Outcome",
        "RewardConfig",
        "Solver",
        "SolverUnavailableError",
        "UnknownSolverError",
        "available_solvers",
        "compute_score",
        "get_solver",
        "trl_reward",
        "verify",
        "verify_code",
    ]
    public = {n for n, v in vars(solvers).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - {"annotations"} == set(solvers.__all__)  # annotations: the __future__ import


def test_built_in_solvers_are_registered_and_installed_here() -> None:
    assert solver_names() == BUILT_IN
    assert available_solvers() == BUILT_IN


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownSolverError) as caught:
        get_solver("cplex")
    assert isinstance(caught.value, KeyError)  # callers that catch KeyError keep working
    assert str(caught.value).startswith("unknown solver 'cplex'; valid solvers: coptpy, gurobipy, highspy")


def test_missing_package_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry of its own, so that the built-in list the other tests read stays as shipped.
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    absent = ApiAdapter(
        name="absent-solver",
        package="evom_no_such_package",
        pip_requirement="evom[solvers-extra]",
        instructions="",
        preload=(),
        hook="gurobipy_hook",
        statuses={},
    )
    register(absent)
    with pytest.raises(SolverUnavailableError, match=r"pip install 'evom\[solvers-extra\]'"):
        get_solver("absent-solver")
    assert get_solver("absent-solver", require_installed=False) is absent
    assert "absent-solver" not in available_solvers()
    with pytest.raises(ValueError, match="already registered"):
        register(absent)


@pytest.mark.parametrize("name", BUILT_IN)
def test_adapter_is_complete(name: str) -> None:
    solver = get_solver(name)
    assert isinstance(solver, Solver)
    assert (HOOKS_DIR / f"{solver.hook}.py").is_file()
    assert name.split("py")[0].lower() in solver.instructions.lower() or name in solver.instructions.lower()
    assert "complete" in solver.instructions and len(solver.instructions) < 1000
    if name in ("pyscipopt", "pulp", "pyomo"):
        assert solver.pip_requirement == "evom[solvers-extra]"


def test_status_tables_map_raw_codes() -> None:
    gurobi = get_solver("gurobipy")
    state = gurobi.classify({"status": 2, "objective": 3.5, "variables": 2, "constraints": 1})
    assert (state.state, state.raw, state.objective) == ("optimal", "OPTIMAL", 3.5)
    assert gurobi.classify({"status": 9, "objective": 3.0}).state == "feasible"  # TIME_LIMIT with an incumbent
    assert gurobi.classify({"status": 9, "objective": None}).state == "no_solution"
    assert gurobi.classify({"status": 3, "objective": 1e30}).objective is None
    ortools = get_solver("ortools")
    assert ortools.classify({"api": "cp_sat", "status": 4, "objective": 1.0}).raw == "cp_sat:OPTIMAL"
    assert ortools.classify({"api": "mathopt", "status": "INFEASIBLE_OR_UNBOUNDED"}).state == "inf_or_unbd"
    pulp = get_solver("pulp")  # PuLP's status says Optimal for an integer-feasible answer; sol_status does not
    assert pulp.classify({"status": 1, "solution_status": 2, "objective": 4.0}).state == "feasible"


def test_license_limit_comes_from_error_codes_only() -> None:
    gurobi, copt = get_solver("gurobipy"), get_solver("coptpy")
    assert gurobi.is_license_limit({"type": "gurobipy._exception.GurobiError", "code": 10010})
    assert not gurobi.is_license_limit({"type": "gurobipy._exception.GurobiError", "code": 10005})
    assert not gurobi.is_license_limit({"type": "builtins.ValueError", "code": 10010, "message": "license"})
    assert copt.is_license_limit({"type": "coptcore.CoptError", "code": 4})
    assert not get_solver("highspy").is_license_limit({"type": "builtins.RuntimeError", "code": 4})


def test_solvers_does_not_import_engine_or_learner() -> None:
    code = "import sys, solvers, solvers.cli\n"
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'learner')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
