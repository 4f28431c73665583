"""The `Solver` extension point: one adapter per solver API, and the registry that finds them.

An adapter says how to talk to one solver API and how to read what it reported:

- `instructions`: the text inserted into the prompt (how a program for this API must be written);
- `preload`: the modules a sandbox worker imports before any program runs;
- `hook`: the file in `solvers/hooks/` that wraps the API's solve entry points inside the sandbox;
- `classify(record)`: one solve record from the hook -> a `SolveState` (canonical state + raw status);
- `is_license_limit(exception)`: whether an exception record is the size-limited license refusing a model.

    from solvers import get_solver, available_solvers
    solver = get_solver("gurobipy")      # unknown names fail listing the valid ones
    available_solvers()                  # those whose Python package is installed here
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

SolveStateName = Literal[
    "optimal",  # proven optimal, objective present
    "infeasible",
    "unbounded",
    "inf_or_unbd",  # the solver proved there is no optimum without saying which of the two
    "feasible",  # stopped at a limit with an incumbent
    "no_solution",  # stopped at a limit (or failed numerically) without a solution
    "license_limit",  # the size-limited license refused the model
    "error",  # the solve call raised, or the harness could not read the model
]


@dataclass(frozen=True, kw_only=True)
class SolveState:
    """What one solve call ended with, in canonical terms, plus the solver's own words for it."""

    state: SolveStateName
    raw: str
    objective: float | None = None
    variables: int | None = None
    constraints: int | None = None


@runtime_checkable
class Solver(Protocol):
    """One solver API as the verifier sees it. See the module docstring for the meaning of each member."""

    name: str
    package: str
    pip_requirement: str
    instructions: str
    preload: tuple[str, ...]
    hook: str

    def classify(self, record: Mapping[str, Any]) -> SolveState: ...

    def is_license_limit(self, exception: Mapping[str, Any]) -> bool: ...


class SolverUnavailableError(RuntimeError):
    """The solver is registered but its Python package is not installed in this environment."""


class UnknownSolverError(KeyError):
    """No solver is registered under the name asked for; the message lists the valid names.

    A `KeyError` so that a lookup failure reads as one, but printed as the plain message: `KeyError.__str__`
    shows the repr of its argument (quotes and escapes), which is not what a user should read."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, Solver] = {}


def register(solver: Solver) -> Solver:
    """Add `solver` to the registry under `solver.name`; a second solver with the same name is an error."""
    if solver.name in _REGISTRY:
        raise ValueError(f"a solver named {solver.name!r} is already registered")
    _REGISTRY[solver.name] = solver
    return solver


def solver_names() -> list[str]:
    """Every registered solver name, installed or not."""
    return sorted(_REGISTRY)


def is_installed(solver: Solver) -> bool:
    return importlib.util.find_spec(solver.package) is not None


def get_solver(name: str, *, require_installed: bool = True) -> Solver:
    """The adapter called `name`; raises UnknownSolverError listing the valid names, or SolverUnavailableError."""
    try:
        solver = _REGISTRY[name]
    except KeyError:
        raise UnknownSolverError(f"unknown solver {name!r}; valid solvers: {', '.join(solver_names())}") from None
    if require_installed and not is_installed(solver):
        raise SolverUnavailableError(
            f"solver {name!r} needs the Python package {solver.package!r}, which is not installed; "
            f"install it with: pip install '{solver.pip_requirement}'"
        )
    return solver


def available_solvers() -> list[str]:
    """Names of the registered solvers whose Python package is installed here (found, not imported:
    importing coptpy or gurobipy prints license banners and takes seconds)."""
    return [name for name in solver_names() if is_installed(_REGISTRY[name])]
