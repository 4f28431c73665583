"""Failure taxonomy: why a completion was not correct, one kind per outcome (`Outcome.error_kind`).

    kind = error_kind(status, answer=..., sandbox_status=..., exception=..., solver=...)   # None when correct

The kinds, and what decides each (the first that applies):

- infrastructure: the sandbox or the harness failed (`sandbox_error`), not the program; never trained on;
- no_code: no program in the completion;
- timeout: the wall or CPU limit; memory: the memory limit, or a `MemoryError` the limit caused;
- license_limit: the size-limited solver license refused the model;
- syntax: `SyntaxError` (and its `IndentationError`, `TabError`);
- import: a module that does not exist (`ModuleNotFoundError`, or an `ImportError` naming another package);
- solver_api: an attribute the solver's module or objects do not have (`AttributeError` raised on one of them,
  `model.optimise()`), or a name the solver's package does not export (`from gurobipy import Foo`);
- type_value: `TypeError` or `ValueError` (a wrong argument to the API or to Python);
- solver_error: an exception of the solver's own classes (`GurobiError`), or a solve call that failed;
- runtime: any other way the program did not end cleanly (another exception, a non-zero exit, a signal, the
  output limit, a broken harness channel);
- no_solve: it ran, but its last solve proved no optimum it could be judged on, or it never solved;
- wrong_claim: it claimed infeasible/unbounded for a problem with an optimum, or an optimum for one without;
- wrong_objective: an optimum that does not match the answer.

Which object an `AttributeError` came from, and which module an `ImportError` named, the harness reports from the
exception itself (`owner`, `module` in the exit record: see `solvers/hooks/runtime.py`), never from stderr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from solvers.base import Solver
from solvers.harness import RUNTIME_MODULES

ErrorKind = Literal[  # in the order a program meets them: written, imported, run, solved, judged
    "no_code",
    "syntax",
    "import",
    "solver_api",
    "type_value",
    "runtime",
    "solver_error",
    "memory",
    "timeout",
    "license_limit",
    "no_solve",
    "wrong_claim",
    "wrong_objective",
    "infrastructure",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)
INFRASTRUCTURE: ErrorKind = "infrastructure"  # also the kind of the rollout's own infrastructure failures

_SYNTAX = {"builtins.SyntaxError", "builtins.IndentationError", "builtins.TabError"}
_TYPE_VALUE = {"builtins.TypeError", "builtins.ValueError"}


def solver_modules(solver: Solver) -> frozenset[str]:
    """Top-level module names that belong to `solver` (its package and what its workers preload)."""
    names = {solver.package, *(m for m in solver.preload if m not in RUNTIME_MODULES)}
    return frozenset(name.split(".")[0] for name in names)


def _in(module: Any, roots: frozenset[str]) -> bool:
    return isinstance(module, str) and module.split(".")[0] in roots


def exception_kind(exception: Mapping[str, Any], solver: Solver) -> ErrorKind:
    """The kind of the exception that ended a program (the harness's record: type, message, owner, module)."""
    kind, roots = str(exception.get("type", "")), solver_modules(solver)
    if kind in _SYNTAX:
        return "syntax"
    if kind == "builtins.MemoryError":
        return "memory"
    if kind in ("builtins.ImportError", "builtins.ModuleNotFoundError"):
        named_solver = kind == "builtins.ImportError" and _in(exception.get("module"), roots)
        return "solver_api" if named_solver else "import"
    if kind == "builtins.AttributeError":
        return "solver_api" if _in(exception.get("owner"), roots) else "runtime"
    if kind in _TYPE_VALUE:
        return "type_value"
    if _in(kind, roots):
        return "solver_error"
    return "runtime"


def error_kind(
    status: str,
    *,
    answer: float | None,
    sandbox_status: str = "ok",
    exception: Mapping[str, Any] | None = None,
    solver: Solver | None = None,
    ran_clean: bool = False,
) -> ErrorKind | None:
    """The kind of a verdict (module docstring); None when it is correct.

    status: the Outcome status; sandbox_status: the sandbox Result's; exception: the harness's record of the
    exception that ended the program, when one did (only trusted when the channel verified); ran_clean: the
    program exited cleanly and the harness read its last solve (then an "error" is the solve call's)."""
    if status == "correct":
        return None
    fixed: dict[str, ErrorKind] = {
        "sandbox_error": "infrastructure",
        "no_code": "no_code",
        "timeout": "timeout",
        "no_solve": "no_solve",
        "infeasible": "wrong_claim",
        "unbounded": "wrong_claim",
    }
    if status in fixed:
        return fixed[status]
    if status == "wrong":
        return "wrong_claim" if answer is None else "wrong_objective"
    if sandbox_status == "memory":
        return "memory"
    if status == "license_limit":
        return "license_limit"
    if exception and solver is not None:
        return exception_kind(exception, solver)
    return "solver_error" if ran_clean else "runtime"
