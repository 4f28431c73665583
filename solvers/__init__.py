"""EVOM's solver room: per-solver adapters, the result-capturing harness, code extraction, and the reward.

    from solvers import get_solver, available_solvers, verify
    solver = get_solver("gurobipy")          # also "ortools", "coptpy", "pyscipopt", "highspy", "pulp", "pyomo"
    outcome = await verify(pool, completion, solver, answer)     # pool: sandbox.SandboxPool
    outcome.status, outcome.objective, outcome.reward, outcome.correct

Other trainers: `trl_reward(solver)` is a TRL GRPOTrainer reward function, `compute_score` verl's custom reward
function (`solvers.integrations`).

Command line: `python -m solvers verify --solver gurobipy --input IN.jsonl --output OUT.jsonl`.

The names below are the package's contract. The parts behind them (`solvers.extract`, `solvers.harness`,
`solvers.reward`'s helpers, `solvers.registry`, `solvers.adapters`) are importable from their modules for
tests and tools, and may change without notice.
"""

from __future__ import annotations

from solvers.base import Solver, SolverUnavailableError, UnknownSolverError
from solvers.extract import ExtractConfig
from solvers.integrations import compute_score, trl_reward
from solvers.registry import available_solvers, get_solver
from solvers.reward import Outcome, RewardConfig
from solvers.verify import verify, verify_code

__all__ = [
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
