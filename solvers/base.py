"""The `Solver` extension point: what one adapter per solver API provides, and the registry's errors.

An adapter says how to talk to one solver API and how to read what it reported:

- `instructions`: the text inserted into the prompt (how a program for this API must be written);
- `preload`: the modules a sandbox worker imports before any program runs;
- `hook`: the file in `solvers/hooks/` that wraps the API's solve entry points inside the sandbox;
- `classify(record)`: one solve record from the hook -> a `SolveState` (canonical state + raw status);
- `is_license_limit(exception)`: whether an exception record is the size-limited license refusing a model.

The adapters are in `solvers.adapters`; `solvers.registry` lists them and looks them up by name.
"""

from __future__ import annotations

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
