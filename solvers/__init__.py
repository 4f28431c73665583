"""EVOM's solver room: per-solver adapters, the result-capturing harness, code extraction, and the reward.

    from solvers import get_solver, available_solvers, verify
    solver = get_solver("gurobipy")          # also "ortools", "coptpy", "pyscipopt", "highspy", "pulp", "pyomo"
    outcome = await verify(pool, completion, solver, answer)     # pool: sandbox.SandboxPool
    outcome.status, outcome.objective, outcome.reward, outcome.correct

Command line: `python -m solvers verify --solver gurobipy --input IN.jsonl --output OUT.jsonl`.
"""

from __future__ import annotations

from solvers import adapters as _adapters  # noqa: F401  (registers the built-in adapters)
from solvers.base import (
    Solver,
    SolverUnavailableError,
    SolveState,
    UnknownSolverError,
    available_solvers,
    get_solver,
    register,
    solver_names,
)
from solvers.extract import ExtractConfig, extract_code
from solvers.harness import build_program, parse_channel
from solvers.reward import OUTCOME_STATUSES, Outcome, RewardConfig, matches, reward_of
from solvers.verify import judge, verify, verify_code

__all__ = [
    "OUTCOME_STATUSES",
    "ExtractConfig",
    "Outcome",
    "RewardConfig",
    "SolveState",
    "Solver",
    "SolverUnavailableError",
    "UnknownSolverError",
    "available_solvers",
    "build_program",
    "extract_code",
    "get_solver",
    "judge",
    "matches",
    "parse_channel",
    "register",
    "reward_of",
    "solver_names",
    "verify",
    "verify_code",
]
