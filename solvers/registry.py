"""The solver registry: the built-in adapters, listed here by hand, and the lookup by name.

    from solvers import get_solver, available_solvers
    solver = get_solver("gurobipy")      # unknown names fail listing the valid ones
    available_solvers()                  # those whose Python package is installed here

A new solver is an adapter in `solvers.adapters`, a hook in `solvers/hooks/`, and one entry in `_BUILT_IN`.
"""

from __future__ import annotations

import importlib.util

from solvers.adapters import COPTPY, GUROBIPY, HIGHSPY, ORTOOLS, PULP, PYOMO, PYSCIPOPT
from solvers.base import Solver, SolverUnavailableError, UnknownSolverError

_BUILT_IN: tuple[Solver, ...] = (GUROBIPY, ORTOOLS, COPTPY, PYSCIPOPT, HIGHSPY, PULP, PYOMO)
_REGISTRY: dict[str, Solver] = {solver.name: solver for solver in _BUILT_IN}


def register(solver: Solver) -> Solver:
    """Add `solver` under `solver.name`; a second solver with the same name is an error. Its `hook` must name a
    file in `solvers/hooks/`."""
    if solver.name in _REGISTRY:
        raise ValueError(f"a solver named {solver.name!r} is already registered")
    _REGISTRY[solver.name] = solver
    return solver


def solver_names() -> list[str]:
    """Every registered solver name, installed or not."""
    return sorted(_REGISTRY)


def get_solver(name: str, *, require_installed: bool = True) -> Solver:
    """The adapter called `name`; raises UnknownSolverError listing the valid names, or SolverUnavailableError."""
    try:
        solver = _REGISTRY[name]
    except KeyError:
        raise UnknownSolverError(f"unknown solver {name!r}; valid solvers: {', '.join(solver_names())}") from None
    if require_installed and not _is_installed(solver):
        raise SolverUnavailableError(
            f"solver {name!r} needs the Python package {solver.package!r}, which is not installed; "
            f"install it with: pip install '{solver.pip_requirement}'"
        )
    return solver


def available_solvers() -> list[str]:
    """Names of the registered solvers whose Python package is installed here (found, not imported:
    importing coptpy or gurobipy prints license banners and takes seconds)."""
    return [name for name in solver_names() if _is_installed(_REGISTRY[name])]


def _is_installed(solver: Solver) -> bool:
    return importlib.util.find_spec(solver.package) is not None
